"""Arrays that are not activations: NaN/Inf, wrong rank, wrong row count, empty,
non-float dtypes, values beyond the stored dtype, ragged or object input -- each is
refused with a typed InvalidInput before anything is written (no catalog row, no
array folder), through write_rep and through the streaming RepWriter."""

from __future__ import annotations

import numpy as np
import pytest
from security_kit import DIM, N_EX, raises_actdb

from actdb.errors import DtypeOverflow, InvalidInput, NonFinite

pytestmark = pytest.mark.slow


def _nan() -> np.ndarray:
    x = np.ones((N_EX, DIM))
    x[3, 2] = np.nan
    return x


def _inf(sign: float = 1.0) -> np.ndarray:
    x = np.ones((N_EX, DIM), np.float32)
    x[-1, -1] = sign * np.inf
    return x


BAD_ARRAYS = {
    "NaN": (_nan(), NonFinite),
    "+Inf": (_inf(), NonFinite),
    "-Inf": (_inf(-1.0), NonFinite),
    "1-D": (np.ones(N_EX), InvalidInput),
    "3-D": (np.ones((N_EX, 2, DIM)), InvalidInput),
    "0-D": (np.float32(1.0), InvalidInput),
    "one row short": (np.ones((N_EX - 1, DIM)), InvalidInput),
    "one row too many": (np.ones((N_EX + 1, DIM)), InvalidInput),
    "no rows": (np.ones((0, DIM)), InvalidInput),
    "no columns": (np.ones((N_EX, 0)), InvalidInput),
    "int32": (np.ones((N_EX, DIM), np.int32), InvalidInput),
    "int64": (np.ones((N_EX, DIM), np.int64), InvalidInput),
    "bool": (np.ones((N_EX, DIM), bool), InvalidInput),
    "complex": (np.ones((N_EX, DIM), np.complex64), InvalidInput),
    "strings": (np.full((N_EX, DIM), "1.0"), InvalidInput),
    "objects": (np.full((N_EX, DIM), None, dtype=object), InvalidInput),
    "datetime": (np.zeros((N_EX, DIM), "datetime64[s]"), InvalidInput),
    "ragged list": ([[1.0, 2.0], [1.0]], InvalidInput),
    "None": (None, InvalidInput),
    "a dict": ({"a": 1}, InvalidInput),
    "float16 overflow": (np.full((N_EX, DIM), 1e6), DtypeOverflow),
}


def test_write_rep_refuses_bad_arrays(hostile_store, unchanged):
    db, _ = hostile_store
    for label, (array, kind) in BAD_ARRAYS.items():
        exc = raises_actdb(lambda: db.write_rep("m", "final", "d", "hidden.7", array, pooling="mean"), kind)
        assert str(exc), label


def test_torch_tensors_of_the_wrong_kind(hostile_store, unchanged):
    import torch

    db, _ = hostile_store
    for t in (torch.ones((N_EX, DIM), dtype=torch.int64), torch.ones((N_EX, DIM), dtype=torch.bool),
              torch.full((N_EX, DIM), float("nan")), torch.ones((N_EX, 2, DIM))):
        raises_actdb(lambda: db.write_rep("m", "final", "d", "hidden.7", t, pooling="mean"), InvalidInput)


def test_token_level_rep_with_a_mismatched_token_table(hostile_store, unchanged):
    db, _ = hostile_store
    x = np.ones((N_EX * 3, DIM))
    for tokens in ({"example": np.repeat(np.arange(N_EX), 3)[:-1]},          # one row short of the array
                   {"example": np.repeat(np.arange(N_EX + 5), 3)[: N_EX * 3]},  # unknown example ids
                   {"example": -np.ones(N_EX * 3, int)},
                   {"position": np.zeros(N_EX * 3)},                           # no example column
                   "not a table"):
        raises_actdb(lambda: db.write_rep("m", "final", "d", "hidden.7", x, tokens=tokens, tokenizer="tok2"),
                     InvalidInput)
    raises_actdb(lambda: db.write_rep("m", "final", "d", "hidden.7", x), InvalidInput, match="token table")


def test_streaming_writer_refuses_bad_blocks_without_publishing(hostile_store, unchanged):
    """A RepWriter fed bad blocks refuses each; abort() leaves no trace."""
    db, _ = hostile_store
    w = db.rep_writer("m", "final", "d", "hidden.7", n_rows=None, dim=DIM, pooling="mean", resume=False)
    for label, (array, kind) in BAD_ARRAYS.items():
        if label in ("one row short", "no rows"):  # a short block is a legitimate first block
            continue
        raises_actdb(lambda: w.append(array), kind)
    raises_actdb(lambda: w.append(np.ones((2, DIM + 1))), InvalidInput, match="columns")
    raises_actdb(lambda: w.finish(), InvalidInput, match="0 of")
    assert [r.site for r in db.find_reps(status="writing")] == ["hidden.7"]
    assert "hidden.7" not in {r.site for r in db.reps()}
    w.abort()
    assert db.find_reps(status="writing") == []
    assert db.verify().clean


def test_bad_rep_writer_arguments(hostile_store, unchanged):
    db, _ = hostile_store
    for kwargs in ({"dtype": "int8"}, {"dtype": "float64"}, {"pooling": "max"}, {"codec": "gzip9"},
                   {"dim": 0}, {"n_rows": N_EX + 1}):
        args = {"n_rows": None, "dim": DIM, "pooling": "mean", "resume": False, **kwargs}
        raises_actdb(lambda: db.rep_writer("m", "final", "d", "hidden.7", **args), InvalidInput)
