"""Streaming row batches for probes and sparse autoencoders: ``Selection.dataloader(...)``.

A :class:`RowStream` is a torch ``IterableDataset`` over the rows of one or several reps
that share a row space (several sites or layers of one model over one tokenized dataset):
each batch is a dict ``{key: tensor (batch, d)}`` holding the same rows of every rep, plus
``"label"`` (integer classes) and any token columns asked for.

Shuffling is chunk-wise, so reads stay sequential inside a chunk and memory stays bounded:
the rows are cut into blocks aligned with the stored chunks (``chunk_rows``), the block order
is permuted, and groups of blocks (``buffer_rows`` rows) are read, their rows permuted inside
the group and cut into batches. Reader threads decode each chunk and write its rows straight
to their shuffled places, cast to the output dtype, so batches are views of the group buffer
(no gather). Memory is about two buffers (one consumed, one read ahead) of
``buffer_rows × total width`` values of the output dtype (float32 for bfloat16), whatever the
number of rows. The order is a function of ``(seed, epoch, num_workers)`` only;
:meth:`RowStream.set_epoch` changes it (call it before each epoch, as with torch's
``DistributedSampler``).

DataLoader workers split the blocks (worker ``w`` of ``W`` takes every ``W``-th block of the
epoch's order), so every row is read and yielded exactly once per epoch; each worker ends
with at most one short batch (dropped with ``drop_last=True``). Without shuffling and with at
most one worker, rows come in store order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from actdb.errors import InvalidInput
from actdb.store.arrays import RepArray, open_root, read_threads

if TYPE_CHECKING:
    from actdb.query.selection import Selection
    from actdb.query.storage import Storage
    from actdb.store.records import RepRecord

LABEL_COLUMNS = ("label", "split")
"""Example columns a loader can yield as integer classes (``label=``)."""
TOKEN_COLUMNS = ("row", "example", "position", "token_id")
"""Integer columns a loader can yield beside the activations (``columns=``); example-level
reps have ``row`` and ``example`` only."""
DEFAULT_BUFFER_ROWS = 1 << 14
# bfloat16 is cast from float32 per batch
_NUMPY_OUT: dict[torch.dtype, np.dtype[Any]] = {
    torch.float32: np.dtype(np.float32), torch.float16: np.dtype(np.float16), torch.float64: np.dtype(np.float64)}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64}


@dataclass(frozen=True)
class ArraySpec:
    """Where one rep's array lives, enough to open it in another process (picklable)."""

    key: str
    location: str
    storage_options: dict[str, Any] | None
    path: str
    rep_id: int
    n_rows: int
    dim: int
    dtype: str
    chunk_rows: int
    shard_rows: int

    def open(self) -> RepArray:
        root = open_root(self.location, read_only=True, storage_options=self.storage_options)
        return RepArray(root, self.path, rep_id=self.rep_id, n_rows=self.n_rows, dim=self.dim, dtype=self.dtype,
                        chunk_rows=self.chunk_rows, shard_rows=self.shard_rows)


def parse_dtype(value: Any) -> torch.dtype:
    """A floating torch dtype from a ``torch.dtype`` or its name (``"float32"``, ``"bfloat16"``, ...)."""
    if isinstance(value, torch.dtype) and value in _DTYPES.values():
        return value
    found = _DTYPES.get(str(value).removeprefix("torch."))
    if found is None:
        raise InvalidInput(f"dtype {value!r} is not a floating type a loader yields; choose one of "
                           f"{', '.join(_DTYPES)} (or the torch dtype of that name)")
    return found


def _positive(name: str, value: Any, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidInput(f"{name} must be a positive integer, not {value!r}; {fix}")
    return int(value)


def _keys(reps: Sequence[RepRecord]) -> list[str]:
    """Batch keys: the sites when they are distinct, else the reps' labels (model/checkpoint/site)."""
    reserved = {"label", *TOKEN_COLUMNS}
    for candidate in ([r.site for r in reps], [r.label() for r in reps]):
        if len(set(candidate)) == len(candidate) and not reserved & set(candidate):
            return candidate
    return [f"{r.label()}#{r.rep_id}" for r in reps]


def check_row_space(reps: Sequence[RepRecord]) -> None:
    """Raise InvalidInput unless every rep has the same rows: same dataset, same token table
    (token-level) or all example-level, same number of rows."""
    first = reps[0]

    def show(r: RepRecord) -> str:
        return f"{r.label()} (rep {r.rep_id}, dataset {r.dataset!r}, pooling {r.pooling!r}, {r.n_rows} rows)"

    for r in reps[1:]:
        if r.dataset_hash != first.dataset_hash:
            raise InvalidInput(f"a dataloader streams reps over the same rows, but {show(first)} and {show(r)} are "
                               "over different datasets; select one dataset: "
                               + " or ".join(f".filter(dataset={d!r})" for d in dict.fromkeys(x.dataset for x in reps)))
        if (r.pooling == "token") != (first.pooling == "token"):
            raise InvalidInput(f"{show(first)} and {show(r)} have different rows (tokens vs examples); select one "
                               f"kind, e.g. .filter(pooling={first.pooling!r})")
        if first.pooling == "token" and r.tokens_hash != first.tokens_hash:
            raise InvalidInput(f"{show(first)} and {show(r)} use different token tables (tokenizers "
                               f"{first.tokenizer!r} and {r.tokenizer!r}); select one, e.g. "
                               f".filter(tokenizer={first.tokenizer!r})")
        if r.n_rows != first.n_rows:
            raise InvalidInput(f"{show(first)} and {show(r)} have different numbers of rows; select reps of "
                               "one row space")


def _row_examples(storage: Storage, rep: RepRecord) -> np.ndarray:
    """The example of each row ``(n_rows,)`` (the identity for example-level reps)."""
    if rep.pooling != "token":
        return np.arange(rep.n_rows, dtype=np.int64)
    tokens = storage.token_table(rep)
    return np.asarray(tokens.column("example"), dtype=np.int64)


def label_classes(storage: Storage, rep: RepRecord, label: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each row's class index ``(n_rows,)`` int64 and the class names (sorted): the example
    column ``label`` mapped to rows (through the token table for token-level reps)."""
    if label not in LABEL_COLUMNS:
        raise InvalidInput(f"label {label!r} is not a column of the examples of dataset {rep.dataset!r}; "
                           f"label columns: {', '.join(LABEL_COLUMNS)} (set them with db.annotate(...))")
    values = storage.examples(rep).column(label).to_pylist()
    missing = [i for i, v in enumerate(values) if v is None]
    if missing:
        raise InvalidInput(f"label {label!r}: {len(missing)} of the {len(values)} examples of dataset "
                           f"{rep.dataset!r} have none (first: example {missing[0]}); set them with "
                           f"db.annotate({rep.dataset!r}, {label}s=[...])")
    classes = tuple(sorted(set(values)))
    if len(classes) < 2:
        raise InvalidInput(f"label {label!r} of dataset {rep.dataset!r} has one class ({classes[0]!r}) in all "
                           f"{len(values)} examples: nothing to learn; choose a column with at least two values")
    code = {c: i for i, c in enumerate(classes)}
    codes = np.fromiter((code[v] for v in values), dtype=np.int64, count=len(values))
    return codes[_row_examples(storage, rep)], classes


def token_columns(storage: Storage, rep: RepRecord, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """The integer columns ``columns`` for every row of ``rep`` (each ``(n_rows,)`` int64)."""
    allowed = TOKEN_COLUMNS if rep.pooling == "token" else ("row", "example")
    unknown = [c for c in columns if c not in allowed]
    if unknown:
        raise InvalidInput(f"columns {unknown} cannot be streamed beside {rep.pooling!r} rows; choose from "
                           f"{', '.join(allowed)}")
    out: dict[str, np.ndarray] = {}
    table = None
    for c in dict.fromkeys(columns):
        if c == "row" or (c == "example" and rep.pooling != "token"):
            out[c] = np.arange(rep.n_rows, dtype=np.int64)
            continue
        if table is None:
            table = storage.token_table(rep)
        out[c] = np.asarray(table.column(c), dtype=np.int64)
    return out


class RowStream(IterableDataset):  # type: ignore[type-arg]
    """Row batches of reps over one row space, chunk-shuffled (see the module docstring).

    Yields ``{key: tensor (b, d_key)}`` (plus ``"label"``: int64 ``(b,)`` and each extra
    column: int64 ``(b,)``), ``b = batch_size`` except for each worker's last batch.
    Holds no catalog connection: workers (forked or spawned) open the arrays themselves.
    """

    def __init__(self, specs: Sequence[ArraySpec], *, batch_size: int, shuffle: bool = True, seed: int = 0,
                 buffer_rows: int = DEFAULT_BUFFER_ROWS, drop_last: bool = False, dtype: torch.dtype = torch.float32,
                 labels: np.ndarray | None = None, classes: tuple[str, ...] = (),
                 columns: dict[str, np.ndarray] | None = None, num_workers: int = 0, read_threads_: int | None = None):
        super().__init__()
        self.specs = tuple(specs)
        self.keys = tuple(s.key for s in self.specs)
        self.n_rows = self.specs[0].n_rows
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.dtype = drop_last, dtype
        self.labels, self.classes = labels, classes
        self.columns = dict(columns or {})
        self.num_workers = num_workers
        # rows per block: the largest chunk (chunk sizes are powers of two, so a multiple of the others)
        self.block_rows = max(s.chunk_rows for s in self.specs)
        self.blocks_per_group = max(1, buffer_rows // self.block_rows)
        self.n_blocks = -(-self.n_rows // self.block_rows)
        self.threads = read_threads_ or read_threads()
        self.epoch = 0
        self._arrays: tuple[int, list[RepArray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Use the order of epoch ``epoch`` (a non-negative integer) from the next iteration on."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise InvalidInput(f"epoch must be a non-negative integer, not {epoch!r}")
        self.epoch = int(epoch)

    def __getstate__(self) -> dict[str, Any]:  # spawned workers open their own arrays
        state = dict(self.__dict__)
        state["_arrays"] = None
        return state

    def _open(self) -> list[RepArray]:
        """This process's handles on the arrays (a forked worker opens its own)."""
        if self._arrays is None or self._arrays[0] != os.getpid():
            arrays = [s.open() for s in self.specs]
            for a in arrays:
                a.has_checksums  # noqa: B018 - opens and checks the array once, before threads share it
            self._arrays = (os.getpid(), arrays)
        return self._arrays[1]

    def block_order(self) -> np.ndarray:
        """The epoch's order of blocks (block ``i`` holds rows ``i*block_rows`` onwards)."""
        if not self.shuffle:
            return np.arange(self.n_blocks)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n_blocks)

    def _share(self, worker: int, workers: int) -> np.ndarray:
        return self.block_order()[worker::workers]

    def _rows_in(self, blocks: np.ndarray) -> int:
        last = self.n_blocks - 1
        short = self.n_rows - last * self.block_rows
        return int(len(blocks) * self.block_rows - (self.block_rows - short) * int((blocks == last).any()))

    def __len__(self) -> int:
        """Batches per epoch with ``num_workers`` workers (each worker's last batch may be short)."""
        workers = max(1, self.num_workers)
        total = 0
        for w in range(workers):
            rows = self._rows_in(self._share(w, workers))
            total += rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)
        return total

    def _fill(self, arrays: list[RepArray], block: int, dest: slice | np.ndarray, group: _Group) -> None:
        """Read one block of every rep and put its rows at ``dest`` of the group's buffers
        (their shuffled places), cast to the output dtype: runs on a reader thread (decoding,
        the scatter and the cast release the GIL)."""
        start = int(block) * self.block_rows
        for out, a in zip(group.rows, arrays):
            out[dest] = a[start: start + self.block_rows]
        group.index[dest] = np.arange(start, min(self.n_rows, start + self.block_rows))

    def _submit(self, pool: ThreadPoolExecutor, arrays: list[RepArray], blocks: np.ndarray,
                rng: np.random.Generator) -> _Group:
        """Start reading a group of blocks into fresh buffers, rows in a random order (the
        permutation is drawn here, in group order, so the order does not depend on threads)."""
        sizes = [min(self.block_rows, self.n_rows - int(b) * self.block_rows) for b in blocks]
        total = sum(sizes)
        np_dtype = _NUMPY_OUT.get(self.dtype, np.dtype(np.float32))
        group = _Group(np.empty(total, np.int64), [np.empty((total, s.dim), np_dtype) for s in self.specs], [])
        place: np.ndarray | None = None
        if self.shuffle:
            place = np.empty(total, np.int64)
            place[rng.permutation(total)] = np.arange(total)  # place[i]: where row i of the group goes
        lo = 0
        for b, size in zip(blocks, sizes):
            dest: slice | np.ndarray = slice(lo, lo + size) if place is None else place[lo: lo + size]
            group.pending.append(pool.submit(self._fill, arrays, int(b), dest, group))
            lo += size
        return group

    def _groups(self, blocks: np.ndarray, rng: np.random.Generator) -> Iterator[_Group]:
        """Each group of blocks read and shuffled, the next group read ahead meanwhile."""
        arrays = self._open()
        groups = [blocks[i: i + self.blocks_per_group] for i in range(0, len(blocks), self.blocks_per_group)]
        if not groups:
            return
        with ThreadPoolExecutor(max(1, self.threads), thread_name_prefix="actdb-loader") as pool:
            ahead = self._submit(pool, arrays, groups[0], rng)
            for g in range(len(groups)):
                current = ahead
                for f in current.pending:
                    f.result()
                if g + 1 < len(groups):
                    ahead = self._submit(pool, arrays, groups[g + 1], rng)
                yield current

    def _batch(self, index: np.ndarray, rows: list[np.ndarray]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key, values in zip(self.keys, rows):
            tensor = torch.from_numpy(values)
            out[key] = tensor if tensor.dtype == self.dtype else tensor.to(self.dtype)
        if self.labels is not None:
            out["label"] = torch.from_numpy(self.labels[index])
        for name, col in self.columns.items():
            out[name] = torch.from_numpy(col[index])
        return out

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        rng = np.random.default_rng([self.seed, self.epoch, worker, workers])
        bs = self.batch_size
        carry: tuple[np.ndarray, list[np.ndarray]] | None = None  # a short batch's rows, topped up next group
        for group in self._groups(self._share(worker, workers), rng):
            n, s = len(group.index), 0
            if carry is not None:
                s = min(n, bs - len(carry[0]))
                index = np.concatenate([carry[0], group.index[:s]])
                rows = [np.concatenate([c, r[:s]]) for c, r in zip(carry[1], group.rows)]
                if len(index) < bs:
                    carry = (index, rows)
                    continue
                carry = None
                yield self._batch(index, rows)
            while s + bs <= n:  # batches are views of the group's buffers: no copy
                yield self._batch(group.index[s: s + bs], [r[s: s + bs] for r in group.rows])
                s += bs
            if s < n:
                carry = (group.index[s:].copy(), [r[s:].copy() for r in group.rows])
        if carry is not None and not self.drop_last:
            yield self._batch(*carry)


@dataclass
class _Group:
    """A group of blocks being read: each output row's source row, each rep's rows, the reads."""

    index: np.ndarray
    rows: list[np.ndarray]
    pending: list[Future[None]]


def dataloader(selection: Selection, batch_size: int, *, shuffle: bool = True, seed: int = 0,
               label: str | None = None, columns: Sequence[str] | None = None,
               buffer_rows: int = DEFAULT_BUFFER_ROWS, num_workers: int = 0, drop_last: bool = False,
               dtype: Any = torch.float32, pin_memory: bool = False) -> DataLoader:  # type: ignore[type-arg]
    """A torch DataLoader streaming the rows of ``selection``'s reps (see :meth:`Selection.dataloader`)."""
    batch_size = _positive("batch_size", batch_size, "e.g. batch_size=256")
    buffer_rows = _positive("buffer_rows", buffer_rows, f"the default is {DEFAULT_BUFFER_ROWS}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
        raise InvalidInput(f"num_workers must be a non-negative integer, not {num_workers!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInput(f"seed must be a non-negative integer, not {seed!r}")
    torch_dtype = parse_dtype(dtype)
    if isinstance(columns, str):
        columns = (columns,)
    reps = selection.resolve()
    if not reps:
        raise InvalidInput(f"{selection!r} matches no complete rep: nothing to load; check the filters "
                       "(`actdb ls` lists the stored reps)")
    check_row_space(reps)
    storage = selection.storage
    labels, classes = label_classes(storage, reps[0], label) if label is not None else (None, ())
    extra = token_columns(storage, reps[0], list(columns or ()))
    specs = []
    for key, r in zip(_keys(reps), reps):
        location, options = storage.array_location(r)
        specs.append(ArraySpec(key, location, options, r.path, r.rep_id, r.n_rows,
                               r.dim, r.dtype, r.chunk_rows, r.shard_rows))
    stream = RowStream(specs, batch_size=batch_size, shuffle=bool(shuffle), seed=int(seed), buffer_rows=buffer_rows,
                       drop_last=bool(drop_last), dtype=torch_dtype, labels=labels, classes=classes, columns=extra,
                       num_workers=int(num_workers))
    return DataLoader(stream, batch_size=None, num_workers=int(num_workers), pin_memory=pin_memory)
