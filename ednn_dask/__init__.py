"""ednn-dask: Extensive Deep Neural Networks scored on Zarr-backed fields with Dask.

Importing this package is cheap: the names below are imported on first use (PEP 562),
so ``import ednn_dask`` (and the command line, before it installs its signal
handlers) loads neither dask, xarray nor numba; torch is never imported, and
onnxruntime only when a model is loaded.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# every public name, and the module it comes from
_EXPORTS = {
    "AtomsScore": "atoms",
    "AtomsTable": "atoms",
    "EDNNError": "errors",
    "FieldError": "errors",
    "GeometryError": "errors",
    "ModelFormatError": "errors",
    "ModelSpec": "model",
    "OutputExistsError": "errors",
    "PorousSheet": "atoms",
    "ScoreResult": "score",
    "StoreNotFoundError": "errors",
    "Structure": "atoms",
    "StructureError": "errors",
    "TileModel": "model",
    "Tiling": "tiling",
    "contributions": "inference",
    "energy": "atoms",
    "load_model": "model",
    "make_field": "field",
    "open_field": "field",
    "rasterize": "atoms",
    "save_field": "field",
    "score": "score",
    "score_atoms": "atoms",
}

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

if TYPE_CHECKING:  # what the names are, for type checkers and the API docs
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


def __getattr__(name: str):
    """A public name, imported on first use; else a submodule (``ednn_dask.compute``)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    elif not name.startswith("__"):
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The package's module: ``ednn_dask.score`` stays the function.

    Importing a submodule sets it as an attribute of its package, and the submodule
    ``ednn_dask.score`` has the name of the function ``score``. Imported eagerly, the
    package bound the function after the module; imported lazily, the module would
    replace the function whenever something imported ``ednn_dask.score`` first.
    """

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and name in _EXPORTS and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
