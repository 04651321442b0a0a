"""Processes of the concurrency suite.

usage:
  python _workers.py reader STORE SECONDS REFERENCE.json OUT.json
  python _workers.py ingest STORE MODEL_DIR SECONDS OUT.json
  python _workers.py hold STORE SECONDS          (holds a write session; prints HOLDING)
  python _workers.py write STORE MODEL N OUT.json [CATALOG_URL]

A reader loops until its time is up: opens the store read-only, computes a comparison
over the base reps (never cached: the handle is read-only), runs SQL, and reads every
complete rep it can see in full, checking its checksum (a partial rep would fail it).
Every exception is recorded; the parent requires none.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def reader(store: str, seconds: float, reference: str, out: str) -> None:
    import actdb
    from actdb.store import arrays

    with open(reference) as fh:
        ref = json.load(fh)
    stats = {"compares": 0, "sqls": 0, "reps_read": 0, "errors": [], "max_seen": 0, "mismatches": []}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            db = actdb.open(store, read_only=True, busy_timeout=60)
            values = db.reps(model="m").compare(measure="linear_cka").compute().values()
            stats["compares"] += 1
            if values != ref["values"]:
                stats["mismatches"].append(["compare", values])
            rows = db.sql("SELECT checkpoint, site, n_rows, dim, checksum FROM reps WHERE model = 'm' "
                          "ORDER BY checkpoint, site").to_pylist()
            stats["sqls"] += 1
            if rows != ref["rows"]:
                stats["mismatches"].append(["sql", rows])
            seen = db.sql("SELECT count(*) AS n FROM reps WHERE model <> 'm'").column("n")[0].as_py()
            stats["sqls"] += 1
            if seen < stats["max_seen"]:
                stats["mismatches"].append(["count went down", seen, stats["max_seen"]])
            stats["max_seen"] = max(stats["max_seen"], seen)
            for info in db.find_reps():
                if info.model == "m":
                    continue
                handle = db.read_rep(info)
                rs = arrays.RowStats(info.dtype)
                rs.update(handle.read_stored(0, info.n_rows))
                stats["reps_read"] += 1
                if rs.checksum != info.checksum:
                    stats["mismatches"].append(["partial rep", info.id])
            db.close()
        except Exception as exc:  # every error is a finding
            stats["errors"].append(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-800:]}")
    with open(out, "w") as fh:
        json.dump(stats, fh)


def ingest(store: str, model: str, seconds: float, out: str) -> None:
    import actdb
    from actdb.ingest import docstring_texts
    from actdb.store import arrays

    arrays.CHUNK_BYTES = 2048
    db = actdb.open(store)
    texts = docstring_texts(48, seed=2)
    done: list[int] = []

    def one() -> None:
        res = db.ingest(model, "docs", texts=texts, name="tiny", checkpoints={f"step{len(done)}": model},
                        sites=["hidden.*"], pooling="token,mean", batch_size=8, max_length=24, quiet=True)
        done.append(len(res.rep_ids))

    one()  # warm (model loaded, dataset stored), then the readers start
    print("WRITING", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        one()
    with open(out, "w") as fh:
        json.dump({"checkpoints": len(done), "reps": sum(done)}, fh)


def hold(store: str, seconds: float) -> None:
    import actdb

    db = actdb.open(store)
    with db.session():
        db.add_model("holder")
        print("HOLDING", flush=True)
        time.sleep(seconds)


def write(store: str, model: str, n: int, out: str, catalog_url: str | None = None) -> None:
    import numpy as np

    import actdb

    db = actdb.open(store, catalog_url=catalog_url)
    spans = []
    for i in range(n):
        t0 = time.time()
        x = np.random.default_rng(i).standard_normal((400, 16))  # (the base dataset has 400 texts)
        db.write_rep(model, f"c{i}", "d", "hidden.1", x, pooling="mean")
        spans.append([t0, time.time()])
    with open(out, "w") as fh:
        json.dump({"spans": spans}, fh)


if __name__ == "__main__":
    kind, args = sys.argv[1], sys.argv[2:]
    if kind == "reader":
        reader(args[0], float(args[1]), args[2], args[3])
    elif kind == "ingest":
        ingest(args[0], args[1], float(args[2]), args[3])
    elif kind == "hold":
        hold(args[0], float(args[1]))
    elif kind == "write":
        write(args[0], args[1], int(args[2]), args[3], *(args[4:5]))
