"""Stitching's parameters and objectives: defaults, the objective each head of model B scores,
the parameters one task reports (:func:`task_params`), and the array-API stub.

A leaf: imports nothing of the query layer, so the measure registry can import it to register
``stitching`` (route ``"model"``) without a cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from actdb.errors import InvalidInput

if TYPE_CHECKING:
    from actdb.store.records import RepRecord

Objective = Literal["next_token", "masked_lm", "output_mse"]
Head = Literal["causal", "masked", "none"]

PARAMS: dict[str, Any] = {"ridge": 1e-4, "train_steps": 0, "lr": 1e-3, "holdout": 0.25, "max_eval_examples": 128,
                          "batch_size": 16, "mask_rate": 0.15, "seed": 0, "objective": "auto"}
# objective -> the head of model B it needs (models.head_of_architecture)
OBJECTIVES: dict[str, Head] = {"next_token": "causal", "masked_lm": "masked", "output_mse": "none"}
OBJECTIVE_OF_HEAD: dict[str, Objective] = {"causal": "next_token", "masked": "masked_lm", "none": "output_mse"}
OBJECTIVE_TEXT = {"next_token": "next-token loss (nats/token)", "masked_lm": "masked-LM loss (nats/token)",
                  "output_mse": "output MSE (B's final hidden states with vs without the stitch)"}
CITATION = "Bansal, Nakkiran & Barak 2021; Csiszárik et al. 2021; Brown et al. 2023 (EMNLP)"
DESCRIPTION = ("Stitching penalty: B's held-out loss with A's hidden.i mapped (affine) into B's "
               "hidden.j, minus B's own loss.")


def task_params(given: dict[str, Any], b: RepRecord) -> dict[str, Any]:
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


def objective_for(requested: str, head: str, label: str) -> Objective:
    """The objective a stitch into a model loaded with ``head`` runs: ``requested``, or the
    head's own for ``"auto"``; a requested objective the head cannot score is an error."""
    objective = OBJECTIVE_OF_HEAD[head] if requested == "auto" else requested
    if OBJECTIVES[objective] != head:
        raise InvalidInput(f"stitching objective {objective!r} needs {label} loaded with a "
                           f"{OBJECTIVES[objective]} head, but its checkpoint loads as {head!r}, whose objective "
                           f"is {OBJECTIVE_OF_HEAD[head]!r}; pass objective='auto' (or leave it out)")
    return objective  # type: ignore[return-value]


def stitching(X: Any, Y: Any, **params: Any) -> float:  # noqa: ARG001 - the array API, refused
    """Stitching needs the models, not just two arrays: use it in a plan,
    ``db.reps(...).compare(..., measure="stitching")``, or ``dissim('stitching', a, b)``."""
    raise InvalidInput("measure 'stitching' runs model B on mapped activations, so it needs stored reps and "
                       "their checkpoints: use db.reps(...).compare(other, measure='stitching')")
