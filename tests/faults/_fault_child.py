"""The process the fault suites kill: a 'zygote' that imports actdb (and torch) once and
forks one child per request, so each kill -9 trial costs a fork, not an interpreter start.

Protocol: one JSON request per stdin line; one JSON reply per stdout line.
request: {"command": "write_rep"|"ingest"|"compute"|"migrate", "store": PATH, "args": {...},
          "kill": null | {"kind": EVENT, "at": K} | {"kind": "timer", "after": SECONDS},
          "out": PATH (the child's JSON result, when it finishes)}
reply: {"killed": bool, "exitcode": int|null, "result": {...}|null, "error": str|null}

Events (counted in the forked child; with "kill" the child SIGKILLs itself at the K-th
event of that kind -- a real kill -9, at an exact point):
  sql     before any catalog statement is sent to the database
  commit  after a transaction's statements ran, before COMMIT ("mid-commit")
  chunk   before a shard/chunk file is written to the array store ("mid-chunk")
  meta    before array metadata (zarr.json) is written
  flush   before a RepWriter flushes a shard (array write + progress record)
  batch   before ingest runs the model on a batch ("mid-batch")
A finished child reports the event counts, so a first clean run calibrates the trials.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

EVENTS: Counter[str] = Counter()
KILL: dict[str, Any] | None = None


def event(kind: str) -> None:
    EVENTS[kind] += 1
    if KILL is not None and KILL["kind"] == kind and EVENTS[kind] == KILL["at"]:
        os.kill(os.getpid(), signal.SIGKILL)


def install_hooks() -> None:
    import sqlalchemy as sa
    import zarr.storage

    import actdb.models
    from actdb.store import reps

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", lambda *a: event("sql"))
    sa.event.listen(sa.engine.Engine, "commit", lambda *a: event("commit"))

    original_set = zarr.storage.LocalStore.set

    async def set_(self: Any, key: str, value: Any, *args: Any, **kwargs: Any) -> None:
        event("meta" if key.endswith("zarr.json") else "chunk")
        await original_set(self, key, value, *args, **kwargs)

    zarr.storage.LocalStore.set = set_  # type: ignore[method-assign]

    original_flush = reps.RepWriter._flush

    def flush(self: Any) -> None:
        event("flush")
        original_flush(self)

    reps.RepWriter._flush = flush  # type: ignore[method-assign]

    original_capture = actdb.models.capture

    def capture(*args: Any, **kwargs: Any) -> Any:
        event("batch")
        return original_capture(*args, **kwargs)

    actdb.models.capture = capture


def command(name: str, store: str, args: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    import actdb
    from actdb.store import arrays

    arrays.CHUNK_BYTES = args.get("chunk_bytes", arrays.CHUNK_BYTES)
    if name == "write_rep":
        db = actdb.open(store)
        x = np.random.default_rng(args["seed"]).standard_normal((args["rows"], args["dim"])).astype("float32")
        info = db.write_rep("m", "c", "d", args["site"], x, pooling="mean", dtype=args.get("dtype", "float16"))
        return {"rep_id": info.id, "checksum": info.checksum}
    if name == "ingest":
        db = actdb.open(store)
        res = db.ingest(args["model"], "docs", texts=args["texts"], name="tiny", checkpoints=args["checkpoints"],
                        sites=args["sites"], pooling=args["pooling"], batch_size=args["batch_size"],
                        max_length=args["max_length"], quiet=True)
        return {"status": [c.status for c in res.checkpoints], "rep_ids": list(res.rep_ids)}
    if name == "compute":
        db = actdb.open(store)
        res = db.reps(model="m").compare(measure=args["measures"], pairs="all").compute()
        return {"n": len(res), "values": [r["value"] for r in res]}
    if name == "migrate":
        db = actdb.open(store)  # opening upgrades an old store; migrate() is then a no-op
        return {"revision": db.migrate()}
    raise ValueError(name)


def child(req: dict[str, Any]) -> None:
    global KILL
    KILL = req.get("kill")
    install_hooks()
    if KILL is not None and KILL["kind"] == "timer":
        def later() -> None:
            time.sleep(KILL["after"])
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=later, daemon=True).start()
    t0 = time.perf_counter()
    result = command(req["command"], req["store"], req.get("args", {}))
    result["events"] = dict(EVENTS)
    result["seconds"] = time.perf_counter() - t0
    with open(req["out"], "w") as fh:
        json.dump(result, fh)


def serve() -> None:
    import sqlalchemy  # noqa: F401
    import zarr  # noqa: F401

    import actdb  # import once, before forking
    import actdb.ingest
    import actdb.models
    import actdb.query.executor  # noqa: F401

    if os.environ.get("ACTDB_FAULT_TORCH"):
        import torch  # noqa: F401
        import transformers  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        err_path = req["out"] + ".err"
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                child(req)
            except BaseException:  # reported to the parent
                with open(err_path, "w") as fh:
                    fh.write(traceback.format_exc())
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        result = None
        if os.path.exists(req["out"]):
            with open(req["out"]) as fh:
                result = json.load(fh)
        error = None
        if os.path.exists(err_path):
            with open(err_path) as fh:
                error = fh.read()
        print(json.dumps({"killed": killed, "exitcode": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                          "result": result, "error": error}), flush=True)


if __name__ == "__main__":
    serve()
