"""Model stitching: the functional dissimilarity measure of Brown et al. (EMNLP 2023).

For a pair (model A at ``hidden.i``, model B at ``hidden.j``) over the same tokens:

1. fit an affine map ``Ŷ = X W + b`` from A's stored activations to B's, by closed-form
   (ridge) least squares from the streamed moments of the *fit* examples — A is not re-run;
2. optionally refine ``W, b`` for ``train_steps`` Adam steps on B's own loss, B frozen;
3. run B's blocks from ``j`` on the mapped activations of the *held-out* examples and
   compare B's loss with and without the stitch.

B's loss is its training objective where the checkpoint has the head for it (next-token
cross-entropy for causal LMs; for masked-LM encoders the MLM loss on deterministically
masked inputs, A's side then re-run on the masked inputs); for a model without a head
(a sentence encoder such as all-MiniLM-L6-v2) it is output agreement: the mean squared
error between B's final hidden states with and without the stitch (the value), and the
mean cosine between them (in ``extra``). Which of the three ran is the parameter
``objective`` (``next_token`` | ``masked_lm`` | ``output_mse``; ``auto`` resolves it from
B's architecture when the plan is built), so it is in every result's ``params``. The
stored value is the **penalty** ``stitched − own`` (nats per token, or MSE); both losses go
in ``extra``. ``ridge`` is relative (× the mean eigenvalue of A's centred XᵀX); ``extra``
also reports the absolute penalty it became (``map.ridge_absolute``). A→B and B→A
are separate pairs: stitching is not symmetric, and the asymmetry is the point.

Held-out examples: those whose ``split`` is ``test``/``eval``/``validation``/``heldout``
when the dataset has such a split, else every ``round(1 / holdout)``-th example.
References: Lenc & Vedaldi 2015; Bansal, Nakkiran & Barak 2021; Csiszárik et al. 2021;
Brown et al. 2023.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from actdb.errors import InvalidInput, NotFound
from actdb.query.measures import MeasureSpec, register
from actdb.query.measures._spec import REGISTRY
from actdb.query.moments import Moments

if TYPE_CHECKING:
    from actdb.database import Database
    from actdb.query.selection import Rep

HELD_OUT_SPLITS = ("test", "eval", "validation", "valid", "heldout", "held-out")
PARAMS = {"ridge": 1e-4, "train_steps": 0, "lr": 1e-3, "holdout": 0.25, "max_eval_examples": 128,
          "batch_size": 16, "mask_rate": 0.15, "seed": 0, "objective": "auto"}
# objective -> the head of model B it needs (models.head_of_architecture)
OBJECTIVES = {"next_token": "causal", "masked_lm": "masked", "output_mse": "none"}
OBJECTIVE_OF_HEAD = {head: name for name, head in OBJECTIVES.items()}
OBJECTIVE_TEXT = {"next_token": "next-token loss (nats/token)", "masked_lm": "masked-LM loss (nats/token)",
                  "output_mse": "output MSE (B's final hidden states with vs without the stitch)"}


def task_params(given: dict[str, Any], b: Rep) -> dict[str, Any]:
    """The parameters one stitching task runs with, as reported with its value (and keyed
    in the cache): ``objective`` resolved from B's architecture when ``"auto"``
    (``next_token`` for a causal LM, ``masked_lm`` for a masked-LM checkpoint with its
    head, ``output_mse`` for a bare encoder); ``mask_rate`` only for ``masked_lm``;
    ``lr`` only when ``train_steps > 0``; ``seed`` only where something is random
    (masking, refinement batches). A parameter given that does not apply is an error."""
    from actdb.models import head_of_architecture

    params = {**PARAMS, **given}
    objective = params["objective"]
    if objective == "auto":
        head = head_of_architecture(b.architecture)
        objective = OBJECTIVE_OF_HEAD[head] if b.architecture else "auto"
    elif objective not in OBJECTIVES:
        raise InvalidInput(f"stitching objective {objective!r} is not one of auto, {', '.join(OBJECTIVES)}")
    params["objective"] = objective
    steps = params["train_steps"]
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise InvalidInput(f"stitching train_steps={steps!r} must be a whole number >= 0")
    unused = []
    if objective not in ("masked_lm", "auto"):
        unused.append("mask_rate")
    if steps == 0:
        unused.append("lr")
    if steps == 0 and objective not in ("masked_lm", "auto"):
        unused.append("seed")
    for name in unused:
        if name in given:
            why = "train_steps > 0" if name == "lr" else "the masked_lm objective" if name == "mask_rate" \
                else "train_steps > 0 or the masked_lm objective"
            raise InvalidInput(f"stitching parameter {name}={given[name]!r} does not apply to {b.label()} "
                               f"(objective {objective}, train_steps={steps}): it is used only with {why}")
        params.pop(name)
    return params


def stitching(X: Any, Y: Any, **params: Any) -> float:
    """Stitching needs the models, not just two arrays: use it in a plan,
    ``db.reps(...).compare(..., measure="stitching")``, or ``dissim('stitching', a, b)``."""
    raise InvalidInput("measure 'stitching' runs model B on mapped activations, so it needs stored reps and "
                       "their checkpoints: use db.reps(...).compare(other, measure='stitching')")


def _layer(rep: Rep) -> int:
    if not rep.site.startswith("hidden.") or not rep.site.removeprefix("hidden.").isdigit():
        raise InvalidInput(f"stitching splices the residual stream between blocks; {rep.label()} is site "
                           f"{rep.site!r}: use hidden.N sites")
    return int(rep.site.removeprefix("hidden."))


def _source(db: Database, rep: Rep, models: _Models | None = None) -> str:
    if models is not None:
        key = (rep.store, rep.model, rep.checkpoint)
        if key not in models.sources:
            models.sources[key] = _source(db, rep)
        return models.sources[key]
    store = db.store_handle(rep.store)
    from actdb.store import schema as S

    with store.catalog.connect() as conn:
        src = conn.execute(sa.select(S.checkpoint.c.source).join(S.model, S.model.c.id == S.checkpoint.c.model_id)
                           .where(S.model.c.name == rep.model, S.checkpoint.c.name == rep.checkpoint)).scalar()
    if not src:
        raise NotFound(f"checkpoint {rep.model}/{rep.checkpoint} has no recorded weights location, so it cannot "
                       "be run; ingest it with `actdb ingest` (which records it) or add_checkpoint(source=PATH)")
    return str(src)


def _split(db: Database, rep: Rep, holdout: float) -> tuple[np.ndarray, np.ndarray, str]:
    examples = db.store_handle(rep.store).examples(rep.dataset)
    splits = examples.column("split").to_pylist()
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
        raise InvalidInput(f"dataset {rep.dataset!r} has {n} examples: too few to hold out every {k}th")
    return np.flatnonzero(~ev), np.flatnonzero(ev), f"every {k}th example"


class _Models:
    """What one plan reuses across pairs: loaded models (by weights location), token
    tables and splits (by tokenization), and B's own held-out outputs (by model and rows)."""

    def __init__(self) -> None:
        self.cache: dict[str, Any] = {}
        self.tokens: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        self.splits: dict[tuple[str, str, float], tuple[np.ndarray, np.ndarray, str]] = {}
        self.own: dict[tuple[Any, ...], list[Any]] = {}
        self.sources: dict[tuple[str, str, str], str] = {}

    def get(self, source: str) -> Any:
        if source not in self.cache:
            from actdb.models import load_model

            path, _, revision = source.partition("@") if "@" in source and not source.startswith("/") else (source, "", "")
            self.cache[source] = load_model(path, revision=revision or None, dtype="float32")
        return self.cache[source]


def _batches(tokens: dict[str, np.ndarray], examples: np.ndarray, size: int):  # type: ignore[no-untyped-def]
    """(row indices per example, padded ids (b, T), mask (b, T)) for batches of examples."""
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
        yield rows, ids, mask


def _pad(values: np.ndarray, rows: list[np.ndarray], width: int) -> Any:
    import torch

    out = torch.zeros(len(rows), width, values.shape[1], dtype=torch.float32)
    at = 0
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.from_numpy(values[at: at + len(r)])
        at += len(r)
    return out


def stitch(db: Database, a: Rep, b: Rep, params: dict[str, Any], models: _Models | None = None) -> dict[str, Any]:
    """Stitch A's ``hidden.i`` into B at ``hidden.j``; returns value, n and extra fields."""
    import torch

    from actdb.models import forward, mask_tokens, masked_lm_loss, next_token_loss, run_tail
    from actdb.query.rows import Source, rep_array

    models = models or _Models()
    params = {**PARAMS, **params}
    i, j = _layer(a), _layer(b)
    if a.pooling != "token" or b.pooling != "token":
        raise InvalidInput(f"stitching works on token-level reps; {a.label()} / {b.label()} are pooled")
    if a.tokens_hash != b.tokens_hash or a.dataset_hash != b.dataset_hash:
        raise InvalidInput(f"stitching {a.label()} into {b.label()} needs both to read the same tokens (same texts, "
                           "same tokenizer): A's activations at each token replace B's")
    t0 = time.perf_counter()
    split_key = (a.store, a.dataset, float(params["holdout"]))
    if split_key not in models.splits:
        models.splits[split_key] = _split(db, a, float(params["holdout"]))
    fit_ex, eval_ex, split_text = models.splits[split_key]
    tok_key = (a.store, int(a.tokenization_id))  # type: ignore[arg-type]
    if tok_key not in models.tokens:
        table = db.store_handle(a.store).token_table(a.tokenization_id)  # type: ignore[arg-type]
        models.tokens[tok_key] = {"example": np.asarray(table.column("example")),
                                  "token_id": np.asarray(table.column("token_id"))}
    tokens = models.tokens[tok_key]
    fit_rows = np.flatnonzero(np.isin(tokens["example"], fit_ex))
    arr_a, arr_b = rep_array(db, a), rep_array(db, b)
    # 1. closed-form affine map from the moments of the fit rows (A is not re-run)
    block = max(arr_a.chunk_rows, arr_b.chunk_rows) * 4
    m = Moments.empty([a.dim, b.dim])
    for xa, xb in zip(Source(arr_a, fit_rows).blocks(block), Source(arr_b, fit_rows).blocks(block)):
        if len(xa):
            m.update([xa, xb])
    pm = m.pair(0, 1)
    # ``ridge`` is relative: the absolute penalty is ridge x the mean eigenvalue of A's
    # centred X'X (its trace / d), so the same value suits any scale and row count
    ridge = float(params["ridge"]) * max(float(np.trace(pm.sxx)) / a.dim, 1e-12)
    W = np.linalg.solve(pm.sxx + ridge * np.eye(a.dim), pm.sxy)
    bias = pm.mean_y - pm.mean_x @ W
    loaded = models.get(_source(db, b, models))
    if loaded.hidden_size != b.dim:
        raise InvalidInput(f"{b.label()} has width {b.dim} but its checkpoint's hidden size is {loaded.hidden_size}")
    if j > loaded.n_layers:
        raise InvalidInput(f"{b.label()}: the model has {loaded.n_layers} blocks, no site hidden.{j}")
    Wt = torch.tensor(W, dtype=torch.float32, requires_grad=int(params["train_steps"]) > 0)
    bt = torch.tensor(bias, dtype=torch.float32, requires_grad=int(params["train_steps"]) > 0)
    for p in loaded.model.parameters():
        p.requires_grad_(False)
    head = loaded.head
    objective = params["objective"] if params["objective"] != "auto" else OBJECTIVE_OF_HEAD[head]
    if OBJECTIVES[objective] != head:
        raise InvalidInput(f"stitching objective {objective!r} needs {b.label()} loaded with a "
                           f"{OBJECTIVES[objective]} head, but its checkpoint loads as {head!r}, whose objective "
                           f"is {OBJECTIVE_OF_HEAD[head]!r}; pass objective='auto' (or leave it out)")
    loaded_a = models.get(_source(db, a, models)) if head == "masked" else None
    # 2. optional refinement of the map on B's own objective (B frozen)
    steps = int(params["train_steps"])
    if steps > 0:
        opt = torch.optim.Adam([Wt, bt], lr=float(params["lr"]))
        rng = np.random.default_rng(int(params["seed"]))
        batches = list(_batches(tokens, fit_ex, int(params["batch_size"])))
        for step in range(steps):
            rows, ids, mask = batches[rng.integers(len(batches))]
            x = _pad(arr_a.rows(np.concatenate(rows)).astype(np.float32), rows, ids.shape[1])
            mapped = x @ Wt + bt
            if head == "causal":
                loss = next_token_loss(run_tail(loaded, mapped, j, mask), ids, mask)
            else:
                with torch.no_grad():
                    own = forward(loaded, ids, mask) if head == "none" else None
                out = run_tail(loaded, mapped, j, mask)
                if head == "none":
                    sel = mask.bool()
                    loss = ((out[sel] - own[sel]) ** 2).mean()
                else:  # masked: refine on unmasked reconstruction of B's own logits
                    with torch.no_grad():
                        own = forward(loaded, ids, mask)
                    sel = mask.bool()
                    loss = ((out[sel] - own[sel]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    # 3. evaluate on held-out examples, batched
    eval_ex = eval_ex[: int(params["max_eval_examples"])]
    own_sum = st_sum = cos_sum = 0.0
    count = 0
    source_b = _source(db, b, models)
    own_key = (source_b, tok_key, eval_ex.tobytes(), int(params["batch_size"]), head,
               float(params["mask_rate"]), int(params["seed"]))
    own_cached = models.own.setdefault(own_key, [])
    with torch.no_grad():
        for bi, (rows, ids, mask) in enumerate(_batches(tokens, eval_ex, int(params["batch_size"]))):
            if head == "masked":
                special = None
                ids_in, labels = mask_tokens(ids, mask, loaded.tokenizer, rate=float(params["mask_rate"]),
                                             seed=int(params["seed"]), special_mask=special)
                out_a = loaded_a.model(input_ids=ids_in, attention_mask=mask, output_hidden_states=True)  # type: ignore[union-attr]
                x = out_a.hidden_states[i].float()
                mapped = x @ Wt + bt
                own = forward(loaded, ids_in, mask)
                st = run_tail(loaded, mapped, j, mask)
                n_tok = int((labels != -100).sum())
                if n_tok:
                    own_sum += float(masked_lm_loss(own, labels, reduction="sum"))
                    st_sum += float(masked_lm_loss(st, labels, reduction="sum"))
                    count += n_tok
                continue
            x = _pad(arr_a.rows(np.concatenate(rows)).astype(np.float32), rows, ids.shape[1])
            mapped = x @ Wt + bt
            st = run_tail(loaded, mapped, j, mask)
            if bi == len(own_cached):  # B's own output on this batch: once per plan
                own_out = forward(loaded, ids, mask)
                own_cached.append(float(next_token_loss(own_out, ids, mask, reduction="sum"))
                                  if head == "causal" else own_out)
            if head == "causal":
                valid = (mask[:, 1:].bool() & mask[:, :-1].bool())
                n_tok = int(valid.sum())
                own_sum += own_cached[bi]
                st_sum += float(next_token_loss(st, ids, mask, reduction="sum"))
                count += n_tok
            else:
                own = own_cached[bi]
                sel = mask.bool()
                diff = (st[sel] - own[sel]).float()
                st_sum += float((diff ** 2).mean(-1).sum())
                cos_sum += float(torch.nn.functional.cosine_similarity(st[sel].float(), own[sel].float(), dim=-1).sum())
                count += int(sel.sum())
    if count == 0:
        raise InvalidInput(f"no held-out tokens to evaluate stitching {a.label()} -> {b.label()} on")
    own_loss = own_sum / count
    st_loss = st_sum / count
    extra: dict[str, Any] = {
        "stitched_loss": st_loss, "own_loss": own_loss, "objective": objective,
        "objective_text": OBJECTIVE_TEXT[objective],
        "eval_split": split_text, "n_eval_examples": int(len(eval_ex)), "n_fit_rows": int(len(fit_rows)),
        "from_site": a.site, "to_site": b.site,
        # ridge as given (relative) and the absolute penalty it became: ridge * trace(X'X) / d_A
        "map": {"ridge": float(params["ridge"]), "ridge_absolute": ridge, "train_steps": steps},
    }
    if head == "none":
        extra["mean_cosine"] = cos_sum / count
    return {"value": st_loss - own_loss, "n": count, "extra": extra, "seconds": time.perf_counter() - t0}


def run_model_tasks(db: Database, tasks: list[Any]) -> dict[tuple[Any, ...], Any]:
    """Evaluate the model-route tasks of a plan (stitching), one model load per checkpoint."""
    from actdb.query.executor import Value

    models = _Models()
    out = {}
    with db.catalog.session():
        for t in tasks:
            if t.measure != "stitching":
                raise InvalidInput(f"no model-route implementation for measure {t.measure!r}")
            res = stitch(db, t.a, t.b, t.params_dict, models)
            out[t.cache_key] = Value(res["value"], res["n"], "model", res["seconds"], res["extra"])
    return out


if "stitching" not in REGISTRY:
    register(MeasureSpec(
        name="stitching", func=stitching, kind="distance", value_range=(float("-inf"), float("inf")),
        route="model", params=PARAMS, symmetric=False,
        citation="Bansal, Nakkiran & Barak 2021; Csiszárik et al. 2021; Brown et al. 2023 (EMNLP)",
        description="Stitching penalty: B's held-out loss with A's hidden.i mapped (affine) into B's "
                    "hidden.j, minus B's own loss.",
    ))
