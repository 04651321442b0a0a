"""What a stitch reads: the layer of a ``hidden.N`` site, the fit/held-out split of a dataset,
token batches, A's stored activations padded to a batch, and the models one plan loads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from actdb.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    import torch

    from actdb.models import LoadedModel
    from actdb.query.storage import Storage
    from actdb.store.arrays import RepArray
    from actdb.store.records import RepRecord

HELD_OUT_SPLITS = ("test", "eval", "validation", "valid", "heldout", "held-out")
Split = tuple[np.ndarray, np.ndarray, str]  # (fit examples, held-out examples, how they were chosen)


@dataclass(frozen=True)
class Batch:
    """Examples run together: ``rows`` (each example's row indices in the token table),
    ``ids`` and ``mask`` ``(b, T)`` (right-padded, 1 for real tokens) and, for the masked-LM
    objective, ``labels`` ``(b, T)`` (-100 except at masked positions, where ``ids`` holds [MASK])."""

    rows: list[np.ndarray]
    ids: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor | None = None


Activations = Callable[[Batch], "torch.Tensor"]  # A's hidden states for a batch, (b, T, d_A) float32


def layer_of(rep: RepRecord) -> int:
    """``N`` of a ``hidden.N`` site; stitching splices only the residual stream between blocks."""
    if not rep.site.startswith("hidden.") or not rep.site.removeprefix("hidden.").isdigit():
        raise InvalidInput(f"stitching splices the residual stream between blocks; {rep.label()} is site "
                           f"{rep.site!r}: use hidden.N sites")
    return int(rep.site.removeprefix("hidden."))


def _source(storage: Storage, rep: RepRecord, models: ModelCache | None = None) -> str:
    if models is not None:
        key = (rep.store, rep.model, rep.checkpoint)
        if key not in models.sources:
            models.sources[key] = _source(storage, rep)
        return models.sources[key]
    src = storage.checkpoint_source(rep)
    if not src:
        raise NotFound(f"checkpoint {rep.model}/{rep.checkpoint} has no recorded weights location, so it cannot "
                       "be run; ingest it with `actdb ingest` (which records it) or add_checkpoint(source=PATH)")
    return str(src)


def split_examples(splits: list[Any], holdout: float, dataset: str) -> Split:
    """Fit and held-out example indices: the dataset's own held-out split (``test``, ``eval``,
    ``validation`` ...) when it has one beside other examples, else every ``round(1 / holdout)``-th."""
    n = len(splits)
    held = np.array([str(s).lower() in HELD_OUT_SPLITS if s is not None else False for s in splits])
    if held.any() and not held.all():
        return np.flatnonzero(~held), np.flatnonzero(held), "dataset split " + "/".join(
            sorted({str(s) for s, h in zip(splits, held) if h}))
    if not 0 < holdout < 1:
        raise InvalidInput(f"holdout={holdout} must be a fraction between 0 and 1")
    k = max(2, round(1 / holdout))
    ev = np.arange(n) % k == 0
    if ev.all() or not ev.any():
        raise InvalidInput(f"dataset {dataset!r} has {n} examples: too few to hold out every {k}th")
    return np.flatnonzero(~ev), np.flatnonzero(ev), f"every {k}th example"


class ModelCache:
    """What one plan reuses across pairs: loaded models (by weights location), token
    tables and splits (by tokenization), and B's own held-out outputs (by model and rows)."""

    def __init__(self) -> None:
        self.cache: dict[str, LoadedModel] = {}
        self.tokens: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        self.splits: dict[tuple[str, str, float], Split] = {}
        self.own: dict[tuple[Any, ...], list[Any]] = {}
        self.sources: dict[tuple[str, str, str], str] = {}

    def get(self, source: str) -> LoadedModel:
        if source not in self.cache:
            from actdb.models import load_model

            hub = "@" in source and not source.startswith("/")  # a Hub id at a revision: name@revision
            path, _, revision = source.partition("@") if hub else (source, "", "")
            self.cache[source] = load_model(path, revision=revision or None, dtype="float32")
        return self.cache[source]

    def model(self, storage: Storage, rep: RepRecord) -> tuple[str, LoadedModel]:
        """The weights location of ``rep``'s checkpoint and the model loaded from it."""
        source = _source(storage, rep, self)
        return source, self.get(source)

    def split(self, storage: Storage, rep: RepRecord, holdout: float) -> Split:
        key = (rep.store, rep.dataset, holdout)
        if key not in self.splits:
            examples = storage.examples(rep)
            self.splits[key] = split_examples(examples.column("split").to_pylist(), holdout, rep.dataset)
        return self.splits[key]

    def token_table(self, storage: Storage, rep: RepRecord) -> dict[str, np.ndarray]:
        """``example`` and ``token_id`` per token row of ``rep``'s tokenization."""
        key = (rep.store, int(rep.tokenization_id))  # type: ignore[arg-type]
        if key not in self.tokens:
            table = storage.token_table(rep)
            self.tokens[key] = {"example": np.asarray(table.column("example")),
                                "token_id": np.asarray(table.column("token_id"))}
        return self.tokens[key]


def batches(tokens: dict[str, np.ndarray], examples: np.ndarray, size: int) -> Iterator[Batch]:
    """Batches of ``size`` examples (those with no tokens left out), padded to their longest."""
    import torch

    ex = tokens["example"]
    starts = np.searchsorted(ex, examples)
    ends = np.searchsorted(ex, examples, side="right")
    for s in range(0, len(examples), size):
        rows = [np.arange(a, b) for a, b in zip(starts[s: s + size], ends[s: s + size]) if b > a]
        if not rows:
            continue
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.from_numpy(tokens["token_id"][r].astype(np.int64))
            mask[i, : len(r)] = 1
        yield Batch(rows, ids, mask)


def pad(values: np.ndarray, rows: list[np.ndarray], width: int) -> torch.Tensor:
    """``values`` ``(sum of len(rows), d)``, one block per example, as ``(len(rows), width, d)`` float32."""
    import torch

    out = torch.zeros(len(rows), width, values.shape[1], dtype=torch.float32)
    at = 0
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.from_numpy(values[at: at + len(r)])
        at += len(r)
    return out


def stored_activations(array: RepArray) -> Activations:
    """A's stored activations for a batch's token rows (A is not re-run)."""
    def activations(batch: Batch) -> torch.Tensor:
        return pad(array.rows(np.concatenate(batch.rows)).astype(np.float32), batch.rows, batch.ids.shape[1])
    return activations


def rerun_activations(loaded: LoadedModel, layer: int) -> Activations:
    """A's ``hidden.{layer}`` from running A on each batch's ``ids`` (the masked inputs of the
    masked-LM objective, which A's stored activations never saw)."""
    def activations(batch: Batch) -> torch.Tensor:
        out = loaded.model(input_ids=batch.ids, attention_mask=batch.mask, output_hidden_states=True)
        hidden: torch.Tensor = out.hidden_states[layer].float()
        return hidden
    return activations
