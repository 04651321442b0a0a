"""Checkpoint identity: new weights under a stored checkpoint's name are refused (issue 15.6).

A finished ingest re-run is a no-op, but only for the same weights: before it says
"up-to-date" it hashes the weights it was given and compares them with the hash stored
for that checkpoint. Different weights are an error naming both hashes and the ways out,
and nothing is written (no ingest run, the old activations untouched).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from actdb.cli import main
from actdb.errors import AlreadyExists
from actdb.ingest import run

pytest.importorskip("torch", reason="torch is a hard dependency of ingest")

HASH = re.compile(r"sha256:[0-9a-f]{64}")


def _runs(store: Any) -> int:
    with store.catalog.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM ingest_run")).scalar_one())


def _check_message(message: str, stored: str, given: str) -> None:
    assert stored in message and given in message and stored != given
    assert "checkpoint tiny/final" in message
    assert "--checkpoint NEW=PATH" in message and "--name" in message


@pytest.mark.parametrize("more_sites", [False, True])
def test_new_weights_under_a_stored_name_are_refused(store: Any, neox_sweep: Path, corpus: list[str],
                                                     more_sites: bool) -> None:
    texts = corpus[:12]
    first = run(store, neox_sweep / "checkpoint-0", "docs", texts=texts, name="tiny", sites="hidden.1", quiet=True)
    stored = store.checkpoint("tiny", "final").weights_hash
    assert stored == first.checkpoints[0].weights_hash
    before = store.read_rep(first.rep_ids[0]).to_numpy()
    n_runs = _runs(store)
    again = run(store, neox_sweep / "checkpoint-0", "docs", texts=texts, name="tiny", sites="hidden.1", quiet=True)
    assert again.checkpoints[0].status == "up-to-date" and _runs(store) == n_runs  # same weights: a no-op
    sites = ["hidden.1", "hidden.2"] if more_sites else "hidden.1"
    with pytest.raises(AlreadyExists) as info:
        run(store, neox_sweep / "checkpoint-8", "docs", texts=texts, name="tiny", sites=sites, quiet=True)
    given = HASH.findall(str(info.value))
    assert len(given) == 2
    _check_message(str(info.value), stored, given[1])
    assert store.checkpoint("tiny", "final").weights_hash == stored
    np.testing.assert_array_equal(store.read_rep(first.rep_ids[0]).to_numpy(), before)
    assert len(store.find_reps(model="tiny")) == 1
    if not more_sites:
        assert _runs(store) == n_runs  # refused before anything was written


def test_sweep_rerun_checks_every_checkpoint(store: Any, neox_sweep: Path, corpus: list[str]) -> None:
    texts = corpus[:8]
    specs = {"a": neox_sweep / "checkpoint-0", "b": neox_sweep / "checkpoint-4"}
    run(store, "tiny", "docs", texts=texts, checkpoints=specs, sites="hidden.2", quiet=True)
    b_hash = store.checkpoint("tiny", "b").weights_hash
    swapped = {"a": neox_sweep / "checkpoint-0", "b": neox_sweep / "checkpoint-8"}
    with pytest.raises(AlreadyExists, match=f"checkpoint tiny/b is stored with weights {b_hash}"):
        run(store, "tiny", "docs", texts=texts, checkpoints=swapped, sites="hidden.2", quiet=True)
    result = run(store, "tiny", "docs", texts=texts, checkpoints=specs, sites="hidden.2", quiet=True)
    assert [c.status for c in result.checkpoints] == ["up-to-date", "up-to-date"]


def test_cli_refuses_new_weights_with_both_hashes(tmp_path: Path, neox_sweep: Path, corpus: list[str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(corpus[:10]) + "\n", encoding="utf-8")
    store = str(tmp_path / "s")

    def ingest(folder: str) -> tuple[int, str, str]:
        try:
            main(["ingest", store, "--model", str(neox_sweep / folder), "--name", "tiny", "--dataset", "docs",
                  "--texts", str(texts), "--site", "hidden.1", "--quiet"])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    code, _, err = ingest("checkpoint-0")
    assert code == 0, err
    code, out, _ = ingest("checkpoint-0")
    assert code == 0 and out.startswith("nothing to do")
    code, out, err = ingest("checkpoint-4")
    assert code != 0 and "nothing to do" not in out
    hashes = HASH.findall(err)
    assert len(set(hashes)) == 2, err
    _check_message(" ".join(err.split()), *hashes[:2])
    assert "Traceback" not in err
