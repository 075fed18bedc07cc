"""Models and datasets: registries (``build_model``, ``load_dataset``), local-root loaders with a
clear error when a dataset is absent, the embedded data (digits, latent, glyphs), and the
registry of tap names (``get_tap``). Knows no training and no transfer term.
"""

from harness._lazy import attach

__all__, __getattr__, __dir__ = attach(
    __name__,
    {
        "DatasetInfo": "data",
        "register_dataset": "data",
        "get_dataset": "data",
        "all_datasets": "data",
        "available_datasets": "data",
        "held_splits": "data",
        "load_dataset": "data",
        "dataset_root": "data",
        "ArrayDataset": "data",
        "FileListDataset": "data",
        "CifarDataset": "data",
        "digits_transfer_split": "data",
        "cifar_transform": "data",
        "imagenet_transform": "data",
        "CIFAR100_COARSE": "data",
        "CIFAR_MEAN": "data",
        "CIFAR_STD": "data",
        "IMAGENET_MEAN": "data",
        "IMAGENET_STD": "data",
        "font_files": "glyphs",
        "render_glyphs": "glyphs",
        "LETTERS": "glyphs",
        "ModelInfo": "models",
        "register_model": "models",
        "get_model": "models",
        "all_models": "models",
        "available_models": "models",
        "build_model": "models",
        "replace_head": "models",
        "head_module": "models",
        "with_source_head": "models",
        "DualHead": "models",
        "STAGES": "models",
        "read_state": "models",
        "head_fits": "models",
        "load_weights": "models",
        "TapInfo": "model_taps",
        "register_tap": "model_taps",
        "get_tap": "model_taps",
        "all_taps": "model_taps",
    },
)
