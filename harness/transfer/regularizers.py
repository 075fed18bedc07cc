"""Regularizers of the training objective, by name, with their capabilities as data.

A regularizer is built from a spec, one name or a sum written ``"omega_p+kd"``, and called at
each training step with a :class:`RegContext`; it returns ``{term name: weighted loss}`` so that
each term can be logged, and the loss is ``cross-entropy + sum(terms.values())``
(li2020 Eq. 2; lohit2020 Eq. 9; lu2017 Eq. 4)::

    reg = build_regularizer("omega_p+kd", **{"omega_p.alpha": 0.1, "kd.tau": 4})
    s_taps, t_taps = Taps(student, reg.taps), Taps(teacher, reg.taps)
    ...
    ctx = RegContext(student=student, teacher=teacher, features=s_taps.features,
                     teacher_features=t_taps.features, logits=logits, teacher_logits=t_logits)
    reg.materialize(ctx)        # once, before building the optimiser (learned embeddings)
    opt = torch.optim.SGD([*student.parameters(), *reg.parameters()], lr=0.1)
    terms = reg(ctx)            # {"omega_p": ..., "kd": ...}; ctx.stats holds diagnostics

Each name is registered once, where it is defined (:func:`register_regularizer`); CLI choices,
Optuna categoricals and test parametrisation read :func:`available_regularizers`.
"""

from __future__ import annotations

# isort: off
# the terms register on import, in this order (``otransfer list regularizers``, schemas): keep it
from harness.transfer.reg_core import (
    REGULARIZERS,
    RegContext,
    Regularizer,
    RegularizerInfo,
    all_regularizers,
    available_regularizers,
    build_regularizer,
    get_regularizer,
    register_regularizer,
)
from harness.transfer.reg_terms import (
    KD_SCALES,
    PAPER_GRAD,
    STAGES,
    SamplesOTTerm,
    kd_loss,
    log_solve,
    omega_term,
)
from harness.transfer.reg_jtln import (
    JTLN_ENTROPIES,
    LABEL_COSTS,
    LABEL_OT_SOLVER,
    jtln_loss,
    label_cost_mkmmd,
    label_cost_ot,
    label_cost_spec,
)
# isort: on

__all__ = [
    "RegContext",
    "RegularizerInfo",
    "Regularizer",
    "register_regularizer",
    "get_regularizer",
    "all_regularizers",
    "available_regularizers",
    "build_regularizer",
    "kd_loss",
    "jtln_loss",
    "label_cost_mkmmd",
    "label_cost_ot",
    "KD_SCALES",
    "JTLN_ENTROPIES",
    "LABEL_COSTS",
    "label_cost_spec",
    "REGULARIZERS",
    "STAGES",
    "PAPER_GRAD",
    "LABEL_OT_SOLVER",
    "omega_term",
    "SamplesOTTerm",
    "log_solve",
]
