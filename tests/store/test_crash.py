"""A writer killed with SIGKILL in the middle of write_rep leaves a store that verify
reports clean after --repair, with every rep that was complete before intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import actdb

WRITER = textwrap.dedent("""
    import sys, numpy as np, actdb
    from actdb.store import arrays
    arrays.CHUNK_BYTES = 4096          # many small shards: the kill lands mid-write
    db = actdb.open(sys.argv[1])
    x = np.random.default_rng(1).standard_normal((200_000, 64)).astype("float32")
    print("start", flush=True)
    db.write_rep("m", "c", "d", "hidden.9", x, pooling="mean")
    print("done", flush=True)
""")


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5])
def test_sigkill_during_write_rep(tmp_path, delay):
    path = str(tmp_path / "s")
    db = actdb.open(path)
    db.add_dataset("d", [f"t{i}" for i in range(200_000)])
    before = {}
    for i in range(2):
        x = np.random.default_rng(i).standard_normal((200_000, 4)).astype("float32")
        info = db.write_rep("m", "c", "d", f"hidden.{i}", x, pooling="mean")
        before[info.id] = db.read_rep(info.id).to_numpy()
    checksums = {i: db.rep(i).checksum for i in before}
    db.close()
    with subprocess.Popen([sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "start"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    db = actdb.open(path)
    repaired = db.verify(repair=True)
    assert repaired.clean, repaired.problems
    assert db.verify().clean
    for rep_id, values in before.items():
        assert db.rep(rep_id).checksum == checksums[rep_id]
        np.testing.assert_array_equal(db.read_rep(rep_id).to_numpy(), values)
    # the killed write is either complete and valid, or gone: never half-visible
    sites = {r.site for r in db.find_reps()}
    assert sites in ({"hidden.0", "hidden.1"}, {"hidden.0", "hidden.1", "hidden.9"})
