"""Names and filters from users: paths, NUL, control characters and 10,000-character
names are refused with InvalidInput at every entry point, and nothing is written."""

from __future__ import annotations

import numpy as np
import pytest
from security_kit import DIM, N_EX, raises_actdb

import actdb
from actdb.errors import InvalidInput, NotAStore
from actdb.query.filters import parse_filter_string

pytestmark = pytest.mark.slow

PATHS = ["../x", "a/../b", "/etc/passwd", "..", ".", "x/..", "./x"]
CONTROL = ["a\x00b", "a\nb", "tab\there", "\x1b[2Jansi", "del\x7f", "\r"]
HUGE = ["x" * 10_000]
EMPTY = ["", "   "]
BAD = PATHS + CONTROL + HUGE + EMPTY


SITES = [*BAD, "a/b", "hidden.1;drop", "hidden.1' OR '1'='1", "-x", ".hidden"]
# (Each test tries every bad value against one entry point and snapshots the store once:
# one test per value would spend the CI budget on snapshots.)


def test_model_names(hostile_store, unchanged):
    db, _ = hostile_store
    for name in BAD:
        raises_actdb(lambda: db.add_model(name), InvalidInput)
        raises_actdb(lambda: db.write_rep(name, "final", "d", "hidden.9", np.ones((N_EX, DIM)), pooling="mean"),
                     InvalidInput)


def test_checkpoint_dataset_and_tokenizer_names(hostile_store, unchanged):
    db, _ = hostile_store
    for name in [*BAD, "a/b"]:
        raises_actdb(lambda: db.add_checkpoint("m", name), InvalidInput)
        raises_actdb(lambda: db.add_dataset(name, ["t"]), InvalidInput)
        raises_actdb(lambda: db.write_rep("m", name, "d", "hidden.9", np.ones((N_EX, DIM)), pooling="mean"),
                     InvalidInput)
        if (name.strip() and "/" not in name) or name == "a/b":  # tokenizers may be hub ids, never paths
            continue
        raises_actdb(lambda: db.write_rep("m", "final", "d", "hidden.9", np.ones((N_EX * 3, DIM)),
                                          tokens={"example": np.repeat(np.arange(N_EX), 3)}, tokenizer=name),
                     InvalidInput)


def test_site_names(hostile_store, unchanged):
    db, _ = hostile_store
    for site in SITES:
        raises_actdb(lambda: db.write_rep("m", "final", "d", site, np.ones((N_EX, DIM)), pooling="mean"),
                     InvalidInput)


def test_attach_names(hostile_store, unchanged):
    db, _ = hostile_store
    for name in [*BAD, "local"]:
        raises_actdb(lambda: db.attach(str(db.path), name=name), actdb.ActdbError)
    assert db.attachments() == []


def test_selection_filter_values(hostile_store, unchanged):
    db, _ = hostile_store
    for value in CONTROL + HUGE + [""]:
        raises_actdb(lambda: db.reps(model=value), InvalidInput)
        raises_actdb(lambda: db.reps(site=[value]), InvalidInput)


def test_path_like_filter_values_only_match_names(hostile_store, unchanged):
    """A filter value is matched against names in memory, never used as a path or SQL."""
    db, _ = hostile_store
    for value in [*PATHS, "x' OR '1'='1", "%"]:
        assert list(db.reps(model=value)) == []


@pytest.mark.parametrize("text", [
    "model=x' OR '1'='1", "model=x;DROP TABLE rep", "model=x),(SELECT 1", "layer=1 OR 1=1",
    "model=$(rm -rf /)", "model=`id`", "model=a\x00b", "model=" + "x" * 10_000, "model=x,model=y",
    "evil=1", "layer=a:b", "layer=1:2:3:4", "=x", "model", "rep_id=1;", "model=x\ncheckpoint=y",
])
def test_filter_strings(text):
    raises_actdb(lambda: parse_filter_string(text), InvalidInput)


def test_a_file_or_a_foreign_folder_is_not_a_store(tmp_path, hostile_store):
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    for p in ("file", "full"):
        raises_actdb(lambda: actdb.open(str(tmp_path / p)), NotAStore)
    raises_actdb(lambda: actdb.open(str(tmp_path / "missing"), read_only=True), NotAStore)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["file", "full"]
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    db, _ = hostile_store
    raises_actdb(lambda: db.attach(str(tmp_path / "full"), name="other"), NotAStore)
