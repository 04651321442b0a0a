"""One stitch of rep A into rep B — fit, refine, evaluate — and the model-route tasks of a plan."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from actdb.errors import InvalidInput
from actdb.query.stitching.evaluate import evaluate, masked_batches
from actdb.query.stitching.fit import fit_reps
from actdb.query.stitching.inputs import (
    ModelCache,
    batches,
    layer_of,
    rerun_activations,
    stored_activations,
)
from actdb.query.stitching.params import OBJECTIVE_TEXT, PARAMS, objective_for
from actdb.query.stitching.refine import refine
from actdb.store.records import ResultValue

if TYPE_CHECKING:
    from actdb.models import LoadedModel
    from actdb.query.storage import Storage
    from actdb.query.tasks import Task
    from actdb.store.records import RepRecord


def _check_pair(a: RepRecord, b: RepRecord) -> None:
    if a.pooling != "token" or b.pooling != "token":
        raise InvalidInput(f"stitching works on token-level reps; {a.label()} / {b.label()} are pooled")
    if a.tokens_hash != b.tokens_hash or a.dataset_hash != b.dataset_hash:
        raise InvalidInput(f"stitching {a.label()} into {b.label()} needs both to read the same tokens (same texts, "
                           "same tokenizer): A's activations at each token replace B's")


def _check_model(b: RepRecord, layer: int, loaded: LoadedModel) -> None:
    if loaded.hidden_size != b.dim:
        raise InvalidInput(f"{b.label()} has width {b.dim} but its checkpoint's hidden size is {loaded.hidden_size}")
    if layer > loaded.n_layers:
        raise InvalidInput(f"{b.label()}: the model has {loaded.n_layers} blocks, no site hidden.{layer}")


def stitch(storage: Storage, a: RepRecord, b: RepRecord, params: dict[str, Any],
           models: ModelCache | None = None) -> ResultValue:
    """Stitch A's ``hidden.i`` into B at ``hidden.j``: 1. fit the map on the fit examples,
    2. refine it (``train_steps > 0``), 3. evaluate B with and without it on held-out examples.
    The value is the penalty, stitched minus own loss (route ``model``; losses in ``extra``)."""
    models = models or ModelCache()
    params = {**PARAMS, **params}
    i, j = layer_of(a), layer_of(b)
    _check_pair(a, b)
    t0 = time.perf_counter()
    fit_ex, eval_ex, split_text = models.split(storage, a, float(params["holdout"]))
    tokens = models.token_table(storage, a)
    fit_rows = np.flatnonzero(np.isin(tokens["example"], fit_ex))
    arr_a = storage.open_rows(a)
    # 1. closed-form affine map from the moments of the fit rows (A is not re-run)
    stitch_map = fit_reps(arr_a, storage.open_rows(b), fit_rows, float(params["ridge"]))
    source_b, loaded = models.model(storage, b)
    _check_model(b, j, loaded)
    objective = objective_for(params["objective"], loaded.head, b.label())
    seed, size, steps = int(params["seed"]), int(params["batch_size"]), int(params["train_steps"])
    # held-out batches; for the masked-LM objective masked, with A re-run on them
    eval_ex = eval_ex[: int(params["max_eval_examples"])]
    held_out = batches(tokens, eval_ex, size)
    eval_activations = stored_activations(arr_a)
    if objective == "masked_lm":
        held_out = masked_batches(held_out, loaded.tokenizer, float(params["mask_rate"]), seed)
        eval_activations = rerun_activations(models.model(storage, a)[1], i)
    # 2. optional refinement of the map on B's own objective (B frozen)
    if steps > 0:
        stitch_map, _ = refine(loaded, stitch_map, list(batches(tokens, fit_ex, size)), j, objective,
                               activations=stored_activations(arr_a), steps=steps, lr=float(params["lr"]), seed=seed)
    # 3. evaluate on held-out examples, B's own run once per plan
    own_key = (source_b, (a.store, int(a.tokenization_id)), eval_ex.tobytes(), size,  # type: ignore[arg-type]
               objective, float(params["mask_rate"]), seed)
    ev = evaluate(loaded, stitch_map, held_out, j, objective, activations=eval_activations,
                  own_cache=models.own.setdefault(own_key, []))
    if ev.n == 0:
        raise InvalidInput(f"no held-out tokens to evaluate stitching {a.label()} -> {b.label()} on")
    extra: dict[str, Any] = {
        "stitched_loss": ev.stitched_loss, "own_loss": ev.own_loss, "objective": objective,
        "objective_text": OBJECTIVE_TEXT[objective],
        "eval_split": split_text, "n_eval_examples": len(eval_ex), "n_fit_rows": len(fit_rows),
        "from_site": a.site, "to_site": b.site,
        # ridge as given (relative) and the absolute penalty it became: ridge * trace(X'X) / d_A
        "map": {"ridge": float(params["ridge"]), "ridge_absolute": stitch_map.ridge_absolute, "train_steps": steps},
    }
    if objective == "output_mse":
        extra["mean_cosine"] = ev.mean_cosine
    return ResultValue(ev.stitched_loss - ev.own_loss, ev.n, "model", time.perf_counter() - t0, extra)


def run_model_tasks(storage: Storage, tasks: Sequence[Task]) -> dict[tuple[Any, ...], ResultValue]:
    """Evaluate the model-route tasks of a plan (stitching), one model load per checkpoint."""
    models = ModelCache()
    out = {}
    with storage.session():
        for t in tasks:
            if t.measure != "stitching":
                raise InvalidInput(f"no model-route implementation for measure {t.measure!r}")
            out[t.cache_key] = stitch(storage, t.a, t.b, t.params_dict, models)
    return out
