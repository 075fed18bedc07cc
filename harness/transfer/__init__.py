"""The science: where to read a network (taps), OT between two representations, and the
regularizer registry with the three papers' terms (li2020 Omega_P / Omega_I / Omega_U and L2-SP,
lohit2020's sample OT with IPOT / REMD, lu2017's JTLN, KD). Knows no training loop, no suite.
"""

from harness._lazy import attach

__all__, __getattr__, __dir__ = attach(
    __name__,
    {
        "RegContext": "regularizers",
        "RegularizerInfo": "regularizers",
        "Regularizer": "regularizers",
        "register_regularizer": "regularizers",
        "get_regularizer": "regularizers",
        "all_regularizers": "regularizers",
        "available_regularizers": "regularizers",
        "build_regularizer": "regularizers",
        "kd_loss": "regularizers",
        "jtln_loss": "regularizers",
        "label_cost_mkmmd": "regularizers",
        "label_cost_ot": "regularizers",
        "KD_SCALES": "regularizers",
        "JTLN_ENTROPIES": "regularizers",
        "LABEL_COSTS": "regularizers",
        "label_cost_spec": "regularizers",
        "VIEWS": "representation",
        "representation_ot": "representation",
        "solve_representation": "representation",
        "matched_fraction": "representation",
        "Taps": "taps",
        "tap_paths": "taps",
        "pool_features": "taps",
    },
)
