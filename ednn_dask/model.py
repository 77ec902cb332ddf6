"""The ONNX tile model: its metadata (:class:`ModelSpec`) and its execution (:class:`TileModel`).

An ednn tile model is an ONNX graph with one input and one output:

- input ``(N, C, *spatial)`` float32; for a ``"tile"`` model ``spatial`` is the
  tile, for a ``"dense"`` model any ``m * focus + 2 * context`` per axis;
- output ``(N, 1, *grid)``: one raw contribution per focus block (``grid`` is all
  ones for a single tile). ``(N, 1)`` or ``(N,)`` are accepted from tile models.

The metadata lives in the graph's ``metadata_props`` under the ``ednn.``
namespace, one JSON value per key (see :data:`METADATA_KEYS`). The pipeline
applies the scalings it names: ``x' = (x - input_offset) * input_scale`` before
the graph and ``contribution = raw * output_scale + output_offset`` after it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ednn_dask.errors import ModelFormatError, StoreNotFoundError
from ednn_dask.tiling import Boundary, Tiling, coerce_axes, coerce_boundary

FORMAT_VERSION = 1
NAMESPACE = "ednn."
REQUIRED_KEYS = ("format_version", "kind", "focus", "context", "boundary", "channels", "target")
METADATA_KEYS = REQUIRED_KEYS + (
    "dims",
    "spacing",
    "spacing_unit",
    "target_unit",
    "input_offset",
    "input_scale",
    "output_offset",
    "output_scale",
    "raster",
    "reference_energies",
    "provenance",
)
RASTER_KEYS = ("gamma", "cutoff", "species")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to use a tile model, as stored in its ONNX metadata."""

    kind: Literal["dense", "tile"]
    focus: tuple[int, ...]
    context: tuple[int, ...]
    boundary: Boundary
    channels: int
    target: str
    target_unit: str = ""
    dims: tuple[str, ...] = ()
    spacing: tuple[float, ...] | None = None
    spacing_unit: str | None = None
    input_offset: float = 0.0
    input_scale: float = 1.0
    output_offset: float = 0.0
    output_scale: float = 1.0
    raster: dict[str, Any] | None = None
    reference_energies: dict[str, float] | None = None
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        ndim = len(self.focus)
        if self.kind not in ("dense", "tile"):
            raise ModelFormatError(f"ednn.kind must be 'dense' or 'tile', got {self.kind!r}.")
        if ndim not in (1, 2, 3):
            raise ModelFormatError(f"ednn.focus must have 1 to 3 axes, got {self.focus!r}.")
        if len(self.context) != ndim:
            raise ModelFormatError(
                f"ednn.context {self.context!r} and ednn.focus {self.focus!r} differ in length."
            )
        if self.dims and len(self.dims) != ndim:
            raise ModelFormatError(f"ednn.dims {self.dims!r} must name {ndim} spatial axes.")
        if self.spacing is not None and (
            len(self.spacing) != ndim or not all(s > 0 and math.isfinite(s) for s in self.spacing)
        ):
            raise ModelFormatError(
                f"ednn.spacing must be {ndim} positive numbers, got {self.spacing!r}."
            )
        if self.channels < 1:
            raise ModelFormatError(f"ednn.channels must be >= 1, got {self.channels!r}.")
        for name in ("input_offset", "input_scale", "output_offset", "output_scale"):
            if not math.isfinite(getattr(self, name)):
                raise ModelFormatError(f"ednn.{name} must be finite, got {getattr(self, name)!r}.")
        if self.input_scale == 0:
            raise ModelFormatError("ednn.input_scale must not be 0.")
        if self.raster is not None:
            self._check_raster(self.raster)
        for symbol, value in (self.reference_energies or {}).items():
            if not isinstance(symbol, str) or not math.isfinite(value):
                raise ModelFormatError(
                    f"ednn.reference_energies must map element symbols to finite eV, got "
                    f"{symbol!r}: {value!r}."
                )

    def _check_raster(self, raster: dict[str, Any]) -> None:
        """Atomistic models say how atoms become their input (gamma, cutoff, species)."""
        if set(raster) != set(RASTER_KEYS):
            raise ModelFormatError(f"ednn.raster must have exactly the keys {RASTER_KEYS}, got "
                                   f"{sorted(raster)}.")
        if not (raster["gamma"] > 0 and raster["cutoff"] >= 0):
            raise ModelFormatError(f"ednn.raster needs gamma > 0 and cutoff >= 0, got {raster}.")
        species = raster["species"]
        if species is None and self.channels != 1:
            raise ModelFormatError(
                "ednn.raster.species is null but the model has several channels."
            )
        if species is not None and len(species) != self.channels:
            raise ModelFormatError(
                f"ednn.raster.species {species} must list one element per channel "
                f"({self.channels})."
            )
        if self.spacing is None:
            raise ModelFormatError("an atomistic model (ednn.raster) needs ednn.spacing.")

    @property
    def ndim(self) -> int:
        return len(self.focus)

    @property
    def tiling(self) -> Tiling:
        return Tiling(self.focus, self.context, self.boundary)

    @property
    def spatial_dims(self) -> tuple[str, ...]:
        """Names of the spatial dimensions, ``("y", "x")`` unless the model says otherwise."""
        return self.dims or ("z", "y", "x")[-self.ndim :]

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` of the ONNX file: ``ednn.<key>`` -> JSON."""
        values = asdict(self)
        return {NAMESPACE + key: json.dumps(values[key], sort_keys=True) for key in METADATA_KEYS}

    @classmethod
    def from_metadata(cls, props: dict[str, str]) -> ModelSpec:
        """Parse and validate ``metadata_props``; raise :class:`ModelFormatError`."""
        ours = {k[len(NAMESPACE) :]: v for k, v in props.items() if k.startswith(NAMESPACE)}
        missing = [k for k in REQUIRED_KEYS if k not in ours]
        if missing:
            raise ModelFormatError(
                f"the model has no ednn metadata {[NAMESPACE + k for k in missing]}; add it with "
                f"ednn_dask.model.write_metadata(path, ModelSpec(...))."
            )
        values: dict[str, Any] = {}
        for key, text in ours.items():
            if key not in METADATA_KEYS:
                continue  # keys of a later minor format are ignored
            try:
                values[key] = json.loads(text)
            except (json.JSONDecodeError, TypeError):
                raise ModelFormatError(
                    f"metadata {NAMESPACE}{key} is not JSON: {text!r}."
                ) from None
        version = values["format_version"]
        if not isinstance(version, int) or version < 1:
            raise ModelFormatError(f"metadata ednn.format_version {version!r} is not valid.")
        if version > FORMAT_VERSION:
            raise ModelFormatError(
                f"the model uses ednn metadata format {version}, newer than this ednn-dask "
                f"supports ({FORMAT_VERSION}); upgrade ednn-dask."
            )
        return cls._from_values(values)

    @classmethod
    def _from_values(cls, values: dict[str, Any]) -> ModelSpec:
        try:
            focus = _int_tuple(values["focus"])
            ndim = len(focus)
            spacing = values.get("spacing")
            return cls(
                kind=values["kind"],
                focus=focus,
                context=coerce_axes(_int_tuple(values["context"]), ndim, "ednn.context"),
                boundary=coerce_boundary(values["boundary"]),
                channels=_strict_int(values["channels"]),
                target=str(values["target"]),
                target_unit=str(values.get("target_unit") or ""),
                dims=tuple(str(d) for d in values.get("dims") or ()),
                spacing=None if spacing is None else tuple(float(s) for s in spacing),
                spacing_unit=values.get("spacing_unit"),
                input_offset=float(values.get("input_offset", 0.0)),
                input_scale=float(values.get("input_scale", 1.0)),
                output_offset=float(values.get("output_offset", 0.0)),
                output_scale=float(values.get("output_scale", 1.0)),
                raster=_raster(values.get("raster")),
                reference_energies=_reference(values.get("reference_energies")),
                provenance=dict(values.get("provenance") or {}),
                format_version=int(values["format_version"]),
            )
        except ModelFormatError:
            raise
        except (TypeError, ValueError) as err:
            raise ModelFormatError(f"malformed ednn metadata: {err}") from None


def _raster(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ModelFormatError(f"ednn.raster must be an object, got {value!r}.")
    missing = [k for k in RASTER_KEYS if k not in value]
    if missing:
        raise ModelFormatError(f"ednn.raster must have exactly the keys {RASTER_KEYS}; "
                               f"missing {missing}.")
    species = value["species"]
    return {
        "gamma": float(value["gamma"]),
        "cutoff": float(value["cutoff"]),
        "species": None if species is None else [_strict_int(z) for z in species],
    }


def _reference(value: Any) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ModelFormatError(f"ednn.reference_energies must be an object, got {value!r}.")
    return {str(k): float(v) for k, v in value.items()}


def _int_tuple(value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if not isinstance(value, list) or not value:
        raise ModelFormatError(f"expected a list of ints, got {value!r}.")
    return tuple(_strict_int(v) for v in value)


def _strict_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelFormatError(f"expected an int, got {value!r}.")
    return value


# One InferenceSession per (model, thread count) per process: sessions cannot be
# pickled, so every worker process builds its own the first time it needs one.
_SESSIONS: dict[tuple[str, int], Any] = {}
_SESSIONS_LOCK = threading.Lock()


class TileModel:
    """An ONNX tile model with validated metadata; cheap to pickle, lazy to run.

    Pickling carries the ONNX bytes and the spec, never an ``InferenceSession``;
    a process builds its session on first use and reuses it for every chunk.
    """

    def __init__(self, onnx_bytes: bytes, spec: ModelSpec, path: str | None = None):
        self.onnx_bytes = onnx_bytes
        self.spec = spec
        self.path = path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TileModel:
        """Read an ONNX file, validate its ednn metadata and its input/output signature."""
        path = Path(path)
        if not path.is_file():
            raise StoreNotFoundError(f"model file {str(path)!r} does not exist.")
        data = path.read_bytes()
        if b"location" in data:  # cheap pre-check: external data names a "location"
            data = _with_external_data_inlined(data, path)
        props = _read_metadata(data, path)
        model = cls(data, ModelSpec.from_metadata(props), str(path))
        model._check_signature()
        return model

    def __reduce__(self):
        return (TileModel, (self.onnx_bytes, self.spec, self.path))

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"TileModel({self.name!r}, kind={s.kind!r}, focus={s.focus}, context={s.context}, "
            f"boundary={s.boundary!r}, target={s.target!r} [{s.target_unit}])"
        )

    @property
    def name(self) -> str:
        return Path(self.path).name if self.path else self.sha256[:12]

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.onnx_bytes).hexdigest()

    def session(self, threads: int = 1):
        """This process's ``InferenceSession`` with ``threads`` intra-op threads."""
        key = (self.sha256, threads)
        session = _SESSIONS.get(key)
        if session is None:
            with _SESSIONS_LOCK:
                session = _SESSIONS.get(key)
                if session is None:
                    session = _SESSIONS[key] = _make_session(self.onnx_bytes, threads)
        return session

    def run(self, batch: np.ndarray, threads: int = 1) -> np.ndarray:
        """Contributions (float32, output scaling applied) for a batch ``(N, C, *spatial)``.

        ``batch`` must already carry the input scaling (see :meth:`scale_input`).
        Returns ``(N, *grid)``.
        """
        session = self.session(threads)
        raw = session.run(None, {session.get_inputs()[0].name: batch})[0]
        n = batch.shape[0]
        grid = tuple(
            (s - 2 * c) // f
            for s, f, c in zip(batch.shape[2:], self.spec.focus, self.spec.context, strict=True)
        )
        if raw.size != n * math.prod(grid):
            raise ModelFormatError(
                f"model {self.name!r} returned an output of shape {raw.shape!r} for an input of "
                f"shape {batch.shape!r}; expected {(n, 1, *grid)!r} (one value per focus block)."
            )
        out = raw.reshape(n, *grid)
        if self.spec.output_scale != 1.0 or self.spec.output_offset != 0.0:
            out = out * np.float32(self.spec.output_scale) + np.float32(self.spec.output_offset)
        return out

    def scale_input(self, block: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """float32 copy of ``block`` with the model's input scaling applied (into ``out``)."""
        if out is None:
            out = np.array(block, dtype=np.float32, copy=True)
        else:
            np.copyto(out, block, casting="same_kind")
        if self.spec.input_offset != 0.0:
            out -= np.float32(self.spec.input_offset)
        if self.spec.input_scale != 1.0:
            out *= np.float32(self.spec.input_scale)
        return out

    def _check_signature(self) -> None:
        session = self.session(1)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelFormatError(
                f"a tile model has one input and one output; {self.name!r} has {len(inputs)} "
                f"inputs and {len(outputs)} outputs."
            )
        shape = inputs[0].shape
        if len(shape) != 2 + self.spec.ndim:
            raise ModelFormatError(
                f"model input {inputs[0].name!r} has shape {shape!r}; a {self.spec.ndim}-d tile "
                f"model takes (N, C, {', '.join(self.spec.spatial_dims)})."
            )
        if isinstance(shape[1], int) and shape[1] != self.spec.channels:
            raise ModelFormatError(
                f"model input has {shape[1]} channels but ednn.channels says {self.spec.channels}."
            )
        if inputs[0].type != "tensor(float)":
            raise ModelFormatError(f"model input must be float32, got {inputs[0].type}.")


def _make_session(onnx_bytes: bytes, threads: int):
    import onnxruntime as ort  # imported here: importing ednn_dask stays cheap

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def _with_external_data_inlined(data: bytes, path: Path) -> bytes:
    """One self-contained blob: weights kept beside the model are read in (from its folder only).

    Workers receive the model as bytes and may not share this file system, so
    external weights are embedded here; a reference outside the model's folder
    (``../``, an absolute path) is refused rather than read.
    """
    try:
        import onnx
        from onnx.external_data_helper import _get_all_tensors, uses_external_data
    except ImportError:
        return data  # onnxruntime then refuses external data loaded from bytes, with its reason
    try:
        model = onnx.load_from_string(data)
    except Exception:
        return data  # not ONNX: _read_metadata says so
    external = [t for t in _get_all_tensors(model) if uses_external_data(t)]
    if not external:
        return data
    folder = path.resolve().parent
    for tensor in external:
        location = next(e.value for e in tensor.external_data if e.key == "location")
        target = (folder / location).resolve()
        if not target.is_relative_to(folder) or not target.is_file():
            raise ModelFormatError(
                f"model {path.name!r} keeps tensor {tensor.name!r} in {location!r}, which is "
                f"{'outside the model folder' if not target.is_relative_to(folder) else 'missing'}"
                f"; external weights must be files in {str(folder)!r}. Refusing to read it."
            )
    onnx.external_data_helper.load_external_data_for_model(model, str(folder))
    return model.SerializeToString()


def _read_metadata(data: bytes, path: Path) -> dict[str, str]:
    try:
        session = _make_session(data, 1)
    except Exception as err:  # onnxruntime raises several types for "not a model"
        raise ModelFormatError(
            f"{str(path)!r} is not a loadable ONNX model ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]})."
        ) from None
    return dict(session.get_modelmeta().custom_metadata_map)


def write_metadata(path: str | os.PathLike, spec: ModelSpec, out: str | os.PathLike | None = None):
    """Add ednn metadata to an ONNX file made elsewhere (needs the ``onnx`` package).

    Writes to ``out`` (default: in place, through a temporary file and a rename).
    """
    import onnx

    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if not p.key.startswith(NAMESPACE)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in spec.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    target = Path(out or path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    onnx.save(model, str(tmp))
    os.replace(tmp, target)
    return target
