"""The training loop (``train``: batches, taps, the reference forward, loss terms, backward,
step, logging, epoch checkpoints) and the DistributedDataParallel helpers. Knows no suite.
"""

from harness._lazy import attach

__all__, __getattr__, __dir__ = attach(
    __name__,
    {
        "init_from_env": "distributed",
        "rank": "distributed",
        "world_size": "distributed",
        "is_main": "distributed",
        "is_distributed": "distributed",
        "local_device": "distributed",
        "barrier": "distributed",
        "broadcast_object": "distributed",
        "broadcast_": "distributed",
        "all_gather_object": "distributed",
        "any_rank": "distributed",
        "all_reduce": "distributed",
        "gather_batch": "distributed",
        "TrainConfig": "config",
        "ParamGroup": "config",
        "TrainResult": "config",
        "train": "loop",
        "evaluate": "steps",
        "assign_param_groups": "config",
        "SOURCE_HEAD_TAP": "setup",
        "REGULARIZER_PREFIX": "config",
    },
)
