"""``actdb ingest`` as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import actdb
from actdb.cli import main

pytest.importorskip("torch", reason="torch is a hard dependency of ingest")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ingest_sweep_then_noop(tmp_path: Path, gpt2_sweep: Path, corpus: list[str],
                                capsys: pytest.CaptureFixture[str]) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(corpus[:20]) + "\n", encoding="utf-8")
    store = str(tmp_path / "s")
    args = ["ingest", store, "--model", "gpt2-tiny", "--dataset", "docs", "--texts", str(texts),
            "--checkpoints-dir", str(gpt2_sweep), "--site", "hidden.1", "--site", "**.mlp.act",
            "--pooling", "token,mean", "--batch-size", "8", "--quiet"]
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    assert out.startswith("ingested gpt2-tiny x docs: 3 checkpoint(s), 3 site(s) x 2 pooling(s) = 18 reps; 20 examples")
    assert "note: checkpoint checkpoint-6 has the same weights as checkpoint-4" in out
    db = actdb.open(store, read_only=True)
    assert len(db.find_reps(model="gpt2-tiny")) == 18
    db.close()
    code, out, _ = cli(capsys, *args)
    assert code == 0 and out.startswith("nothing to do: gpt2-tiny x docs")


def test_ingest_bad_input_exit_codes(tmp_path: Path, neox_sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "s")
    code, _, err = cli(capsys, "ingest", store, "--model", str(tmp_path / "missing"), "--dataset", "d",
                       "--texts", str(tmp_path / "t.txt"), "-q")
    assert code == 1 and "actdb: error: text file" in err and "does not exist" in err
    (tmp_path / "t.txt").write_text("hello\n")
    code, _, err = cli(capsys, "ingest", store, "--model", str(neox_sweep / "checkpoint-0"), "--dataset", "d",
                       "--texts", str(tmp_path / "t.txt"), "--site", "nothing.*", "-q")
    assert code == 1 and "'nothing.*' matches no module" in err
    code, _, err = cli(capsys, "ingest", store, "--model", "m", "--dataset", "d", "--checkpoint", "a=main",
                       "--checkpoints-dir", str(neox_sweep), "-q")
    assert code == 2 and "either --checkpoint" in err


def test_ingest_in_a_real_process(tmp_path: Path, neox_sweep: Path) -> None:
    (tmp_path / "t.jsonl").write_text('{"body": "one text", "y": "a"}\n{"body": "two texts", "y": "b"}\n')
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "actdb", "ingest", str(tmp_path / "s"), "-m",
                           str(neox_sweep / "checkpoint-8"), "-d", "pairs", "-t", str(tmp_path / "t.jsonl"),
                           "--text-column", "body", "--label-column", "y", "--name", "neox", "--pooling", "last"],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "ingested neox x pairs: 1 checkpoint(s), 3 site(s) x 1 pooling(s) = 3 reps" in proc.stdout
    assert proc.stderr == ""  # not a TTY: no progress bar, no noise
    db = actdb.open(str(tmp_path / "s"), read_only=True)
    assert db.examples("pairs").column("label").to_pylist() == ["a", "b"]
    db.close()
