"""Training side of ednn-dask: EDNN module, tile networks, data sets, training, export.

The public pieces are importable from here (``from training import fit, EDNN``);
each is imported on first use, so ``import training`` does not import torch. Torch
lives in ``training.ednn``, ``.multiscale``, ``.nets``, ``.train``, ``.export`` and
``.precondition``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # the EDNN module, its tile nets, the training loop and the export
    "EDNN": "training.ednn",
    "MultiScaleEDNN": "training.multiscale",
    "IsingMLP": "training.nets",
    "ValidCNN": "training.nets",
    "PaperCNN": "training.nets",
    "TrainConfig": "training.config",
    "fit": "training.train",
    "predict": "training.train",
    "default_threads": "training.train",
    "keep_freed_memory": "training.train",
    "export_onnx": "training.export",
    # your own data: the format, its streaming, the generic trainer and its evaluation
    "FieldDataSpec": "training.field_data",
    "SampleStream": "training.field_data",
    "field_dataset": "training.field_data",
    "open_field_data": "training.field_data",
    "train_fields": "training.fields",
    "evaluate_fields": "training.fields",
    # data sets on disk, metrics
    "save_dataset": "training.datasets",
    "load_dataset": "training.datasets",
    "dataset_hash": "training.datasets",
    "error_metrics": "training.metrics",
    "split_indices": "training.metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'training' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
