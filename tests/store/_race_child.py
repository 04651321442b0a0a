"""A process of the create-race tests: waits for a start time, then creates names others create too.

usage: python _race_child.py STORE CATALOG_URL|- START_AT N_NAMES OUT.json [--open-late]

``--open-late`` opens (creates, migrates) the store only at the start time, so that several
processes meet on a fresh catalog too.

Every exception is recorded (type, message, traceback) in OUT.json; the parent requires none.
"""

from __future__ import annotations

import json
import sys
import time
import traceback


def hammer(db, n_names: int) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    """Create model, checkpoint, dataset and token table ``k`` for k < n_names (all writers
    create the same ones, in the same order, so they collide)."""
    errors = []
    for k in range(n_names):
        for what, call in (
            ("model", lambda: db.add_model(f"m{k}", width=8, depth=k)),
            ("checkpoint", lambda: db.add_checkpoint(f"m{k}", "final", step=k, weights_hash=f"sha256:{k:064x}")),
            ("dataset", lambda: db.add_dataset(f"d{k}", [f"text {k} {i}" for i in range(5)], labels=list("ababa"))),
            ("tokenization", lambda: db.add_tokenization(f"d{k}", "tok", {
                "example": list(range(5)), "position": [0] * 5, "token_id": [k] * 5})),
        ):
            try:
                call()
            except Exception as exc:  # every failure is the finding
                errors.append({"what": what, "type": type(exc).__name__, "message": str(exc)[:300],
                               "traceback": traceback.format_exc()[-2000:]})
    return errors


def main() -> None:
    store, url, start_at, n_names, out = sys.argv[1:6]
    late = "--open-late" in sys.argv[6:]
    import actdb

    def wait() -> None:
        delay = float(start_at) - time.time()
        if delay > 0:
            time.sleep(delay)

    if late:
        wait()
    db = actdb.open(store, catalog_url=None if url == "-" else url, busy_timeout=120)
    wait()
    errors = hammer(db, int(n_names))
    db.close()
    with open(out, "w") as fh:
        json.dump(errors, fh)


if __name__ == "__main__":
    main()
