"""ednn-dask: Extensive Deep Neural Networks scored on Zarr-backed fields with Dask.

Importing this package is cheap: it does not import torch, and onnxruntime is
only imported when a model is loaded.
"""

from ednn_dask.errors import (
    EDNNError,
    FieldError,
    GeometryError,
    ModelFormatError,
    OutputExistsError,
    StoreNotFoundError,
)
from ednn_dask.field import make_field, open_field, save_field
from ednn_dask.inference import contributions
from ednn_dask.model import ModelSpec, TileModel
from ednn_dask.score import ScoreResult, score
from ednn_dask.tiling import Tiling

__version__ = "0.1.0"

__all__ = [
    "EDNNError",
    "FieldError",
    "GeometryError",
    "ModelFormatError",
    "ModelSpec",
    "OutputExistsError",
    "ScoreResult",
    "StoreNotFoundError",
    "TileModel",
    "Tiling",
    "contributions",
    "make_field",
    "open_field",
    "save_field",
    "score",
]
