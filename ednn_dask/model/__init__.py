"""The ONNX tile model: its metadata format (:mod:`.spec`) and its runtime (:mod:`.runtime`)."""

from ednn_dask.model.runtime import TileModel, load_model
from ednn_dask.model.spec import FORMAT_VERSION, METADATA_KEYS, ModelSpec, write_metadata

__all__ = ["FORMAT_VERSION", "METADATA_KEYS", "ModelSpec", "TileModel", "load_model",
           "write_metadata"]
