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

from actdb.query.stitching.evaluate import Evaluation, evaluate
from actdb.query.stitching.fit import AffineMap, fit_affine, fit_reps
from actdb.query.stitching.inputs import ModelCache
from actdb.query.stitching.params import (
    CITATION,
    DESCRIPTION,
    OBJECTIVE_OF_HEAD,
    OBJECTIVE_TEXT,
    OBJECTIVES,
    PARAMS,
    stitching,
    task_params,
)
from actdb.query.stitching.refine import refine
from actdb.query.stitching.run import run_model_tasks, stitch

__all__ = [
    "CITATION", "DESCRIPTION", "OBJECTIVES", "OBJECTIVE_OF_HEAD", "OBJECTIVE_TEXT", "PARAMS", "AffineMap", "Evaluation",
    "ModelCache", "evaluate", "fit_affine", "fit_reps", "refine", "run_model_tasks", "stitch", "stitching",
    "task_params",
]
