"""ednn-dask: Extensive Deep Neural Networks scored on Zarr-backed fields with Dask.

Importing this package is cheap: it does not import torch, and onnxruntime is
only imported when a model is loaded.
"""

from ednn_dask.atoms import (
    AtomsScore,
    AtomsTable,
    PorousSheet,
    Structure,
    energy,
    rasterize,
    score_atoms,
)
from ednn_dask.errors import (
    EDNNError,
    FieldError,
    GeometryError,
    ModelFormatError,
    OutputExistsError,
    StoreNotFoundError,
    StructureError,
)
from ednn_dask.field import make_field, open_field, save_field
from ednn_dask.inference import contributions
from ednn_dask.model import ModelSpec, TileModel, load_model
from ednn_dask.score import ScoreResult, score
from ednn_dask.tiling import Tiling

__version__ = "0.1.0"

__all__ = [
    "AtomsScore",
    "AtomsTable",
    "EDNNError",
    "FieldError",
    "GeometryError",
    "ModelFormatError",
    "ModelSpec",
    "OutputExistsError",
    "PorousSheet",
    "ScoreResult",
    "StoreNotFoundError",
    "Structure",
    "StructureError",
    "TileModel",
    "Tiling",
    "contributions",
    "energy",
    "load_model",
    "make_field",
    "open_field",
    "rasterize",
    "save_field",
    "score",
    "score_atoms",
]
