"""Whether a finished training run diverged: read from its history, after the last epoch.

A non-finite loss already stops a run (:mod:`harness.training.loop`). A run can also diverge and
stay finite: at ``lr: 1e6`` an MLP's cross-entropy jumps to ~1e6 and its accuracy to chance,
and both numbers would otherwise be recorded as a result. Two rules, both on the *training*
cross-entropy, so that a run that learnt little (a few examples, a strong regularizer) or whose
weights a large weight decay shrinks to zero (li2020_table1-cpu's ``l2`` at ``alpha=1``: its
accuracy falls to chance, its cross-entropy stays at chance level ``log K``) is not flagged:

* **the loss exploded**: the last epoch's mean cross-entropy is above :data:`LOSS_FACTOR` times
  its reference, the larger of chance level ``log K`` and the cross-entropy before the first
  update (a uniform guess scores ``log K``; a trained network far less);
* **the accuracy collapsed**: the last validation accuracy is at chance (within
  :data:`CHANCE_MARGIN` of ``1/K``, on the scale ``1 - 1/K``) after an earlier one clearly above
  it (:data:`ABOVE_MARGIN`), and the cross-entropy ends above :data:`COLLAPSE_LOSS_FACTOR` times
  the reference: worse than guessing, not merely shrunk to it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

__all__ = ["LOSS_FACTOR", "COLLAPSE_LOSS_FACTOR", "CHANCE_MARGIN", "ABOVE_MARGIN", "diverged"]

LOSS_FACTOR = 3.0
COLLAPSE_LOSS_FACTOR = 1.5
CHANCE_MARGIN = 0.1
ABOVE_MARGIN = 0.25


def diverged(
    history: Mapping[str, Any], num_classes: int | None, lr: float | None = None
) -> str | None:
    """Why the run of ``history`` (``{"epochs": [...], "steps": {...}}`` as
    :func:`~harness.training.loop.train` keeps it) diverged, or ``None``.

    Parameters
    ----------
    history : mapping
        ``epochs``: per-epoch records with ``train/ce`` (the epoch's mean training cross-entropy)
        and, on evaluated epochs, ``val/accuracy``; ``steps``: per-step lists, ``train/ce`` the
        first of which is the loss before any update.
    num_classes : int
        ``K``, the number of classes of the task (``None`` or < 2: no verdict).
    lr : float, optional
        Named in the advice.
    """
    epochs = list(history.get("epochs") or ())
    if not epochs or not num_classes or num_classes < 2:
        return None
    last = epochs[-1].get("train/ce")
    if not isinstance(last, (int, float)) or not math.isfinite(last):
        return None  # no training step (steps=0), or a non-finite loss reported elsewhere
    chance = math.log(num_classes)
    first = list((history.get("steps") or {}).get("train/ce") or ())[:1]
    start = first[0] if first and math.isfinite(first[0]) else chance
    ref = max(chance, start)
    advice = (
        f"lower the learning rate{f' (lr {lr:g})' if lr else ''} or clip gradients "
        "(train.max_grad_norm)"
    )
    where = f"epoch {epochs[-1].get('epoch', len(epochs) - 1)}"
    if last > LOSS_FACTOR * ref:
        return (
            f"training diverged: the loss exploded (training cross-entropy {last:.4g} in the "
            f"last epoch, {where}, above {LOSS_FACTOR:g} x {ref:.3g}, the larger of its "
            f"start {start:.3g} and chance level log {num_classes} = {chance:.3g}); {advice}"
        )
    evals = [
        (e.get("epoch", i), e["val/accuracy"])
        for i, e in enumerate(epochs)
        if isinstance(e.get("val/accuracy"), (int, float))
    ]
    if len(evals) < 2 or last <= COLLAPSE_LOSS_FACTOR * ref:
        return None
    level = 1.0 / num_classes
    at, best = evals[-1][1], max(evals[:-1], key=lambda x: x[1])
    if at <= level + CHANCE_MARGIN * (1 - level) and best[1] >= level + ABOVE_MARGIN * (1 - level):
        return (
            f"training diverged: the validation accuracy fell to chance ({100 * at:.1f} %, "
            f"chance {100 * level:.1f} %) after {100 * best[1]:.1f} % at epoch {best[0]}, "
            f"and the training cross-entropy ended at {last:.3g}, worse than a uniform guess "
            f"(log {num_classes} = {chance:.3g}); {advice}"
        )
    return None
