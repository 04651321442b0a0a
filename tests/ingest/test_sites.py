"""Finding what to capture: `actdb sites`, glob rules ('*' one dotted part, '**' across),
suggestions when nothing matches, the matched sites printed, and `ingest --dry-run`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import actdb
from actdb import models as M
from actdb.errors import NotFound


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actdb", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def bert(minilm: Path) -> M.LoadedModel:
    return M.load_model(minilm)


def test_star_stays_within_one_dotted_part(bert):
    one = [s.name for s in M.resolve_sites(bert, "encoder.layer.*.output.dense")]
    assert one == [f"encoder.layer.{k}.output.dense" for k in range(6)]  # not attention.output.dense (was 12)
    across = {s.name for s in M.resolve_sites(bert, "**.output.dense")}
    assert len(across) == 12 and "encoder.layer.3.attention.output.dense" in across
    assert [s.name for s in M.resolve_sites(bert, "hidden.*")] == [f"hidden.{k}" for k in range(7)]
    assert M.site_glob("a.*.c").match("a.b.c") and not M.site_glob("a.*.c").match("a.b.x.c")
    assert M.site_glob("a.**.c").match("a.b.x.c") and M.site_glob("layer.[12].x").match("layer.1.x")


def test_no_match_suggests_the_closest_paths(bert, neox_sweep):
    with pytest.raises(NotFound) as err:
        M.resolve_sites(bert, "*.mlp.act")
    msg = str(err.value)
    # BERT's MLP activation, not just the top three modules
    assert "closest module paths: 'encoder.layer.*.intermediate.intermediate_act_fn'" in msg
    assert "actdb sites" in msg and "'**' across parts" in msg
    neox = M.load_model(neox_sweep / "checkpoint-0")
    with pytest.raises(NotFound, match=r"'\*\*\.mlp\.act' \(across parts\) matches 2 module\(s\)"):
        M.resolve_sites(neox, "*.mlp.act")


def test_sites_command_lists_shapes_and_layers(minilm):
    out = cli("sites", str(minilm), "-f", "json")
    assert out.returncode == 0, out.stderr
    rows = {r["site"]: r for r in json.loads(out.stdout)}
    assert [rows[f"hidden.{k}"]["layer"] for k in range(7)] == list(range(7))
    inter = rows["encoder.layer.3.intermediate"]
    assert inter["layer"] == 4 and inter["dim"] == 1536 and inter["module"] == "BertIntermediate"
    assert rows["encoder.layer.3.output.dense"]["layer"] == 4 and rows["hidden.4"]["dim"] == 384
    assert "embeddings" in rows and rows["embeddings"]["layer"] is None
    assert "pooler.dense" not in rows  # one row per text, not per token: not capturable
    out = cli("sites", str(minilm), "--match", "encoder.layer.*.output.dense", "-f", "csv")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1 + 6
    out = cli("sites", str(minilm), "--match", "*.mlp.act")
    assert out.returncode == 1 and "intermediate_act_fn" in out.stderr and "Traceback" not in out.stderr


def test_ingest_dry_run_prints_sites_and_writes_nothing(minilm, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("the cat sat\na dog barked\n")
    store = tmp_path / "new-store"
    out = cli("ingest", str(store), "--model", str(minilm), "--dataset", "d", "--texts", str(texts),
              "--site", "encoder.layer.*.output.dense", "--site", "hidden.6", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "7 site(s) matched: encoder.layer.0.output.dense" in out.stdout and "hidden.6" in out.stdout
    assert "attention" not in out.stdout and "dry run: nothing written" in out.stdout
    assert not store.exists()
    # a real run says which sites matched, before it starts and in its summary
    out = cli("ingest", str(store), "--model", str(minilm), "--dataset", "d", "--texts", str(texts),
              "--site", "encoder.layer.[01].output.dense", "-q")
    assert out.returncode == 0, out.stderr
    assert "sites: encoder.layer.0.output.dense, encoder.layer.1.output.dense" in out.stdout
    db = actdb.open(str(store), read_only=True)
    assert [(r.site, r.layer) for r in db.reps()] == [("encoder.layer.0.output.dense", 1),
                                                      ("encoder.layer.1.output.dense", 2)]
    n = len(db.reps())
    db.close()
    out = cli("ingest", str(store), "--model", str(minilm), "--dataset", "d", "--site", "hidden.*", "--dry-run")
    assert out.returncode == 0 and "7 site(s) matched: hidden.0" in out.stdout
    db = actdb.open(str(store), read_only=True)
    assert len(db.reps()) == n
    db.close()
