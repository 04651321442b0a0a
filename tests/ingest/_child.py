"""A separate process for the fault and memory tests: ingest, report, maybe be killed.

usage: python _child.py STORE MODEL N_TEXTS [--chunk-bytes B] [--announce-flushes] [--sites S] [--pooling P]

``--chunk-bytes`` shrinks the store's chunk size (so small reps have many shards and
flush often); ``--announce-flushes`` prints ``FLUSH`` after each shard flush and pauses
briefly, so a parent can SIGKILL this process mid-ingest. The last line printed is a
JSON summary including peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("model")
    ap.add_argument("n", type=int)
    ap.add_argument("--chunk-bytes", type=int, default=0)
    ap.add_argument("--announce-flushes", action="store_true")
    ap.add_argument("--sites", default="hidden.*")
    ap.add_argument("--pooling", default="token")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=48)
    args = ap.parse_args()

    import actdb
    from actdb.ingest import docstring_texts
    from actdb.store import arrays, reps

    if args.chunk_bytes:
        arrays.CHUNK_BYTES = args.chunk_bytes
    if args.announce_flushes:
        original = reps.RepWriter._flush

        def announced(self: reps.RepWriter) -> None:
            original(self)
            print("FLUSH", self.rep_id, self.rows_written, flush=True)
            time.sleep(0.02)

        reps.RepWriter._flush = announced  # type: ignore[method-assign]

    db = actdb.open(args.store)
    texts = docstring_texts(args.n, seed=3)
    result = db.ingest(args.model, "docs", texts=texts, name="m", sites=args.sites.split(","),
                       pooling=args.pooling, batch_size=args.batch_size, max_length=args.max_length, quiet=True)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "status": [c.status for c in result.checkpoints], "start": [c.start_example for c in result.checkpoints],
        "n_tokens": result.n_tokens, "n_rows": result.n_rows, "rep_ids": list(result.rep_ids),
        "peak_rss_mib": peak_kib / 1024,
    }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
