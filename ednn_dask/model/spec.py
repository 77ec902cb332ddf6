"""The ednn model metadata: :class:`ModelSpec`, how it is stored in ONNX, read and written.

An ednn tile model is an ONNX graph with one input and one output:

- input ``(N, C, *spatial)`` float32; for a ``"tile"`` model ``spatial`` is the
  tile, for a ``"dense"`` model any ``m * focus + 2 * context`` per axis;
- output ``(N, 1, *grid)``: one raw contribution per focus block (``grid`` is all
  ones for a single tile). ``(N, 1)`` or ``(N,)`` are accepted from tile models.

The metadata lives in the graph's ``metadata_props`` under the ``ednn.``
namespace, one JSON value per key (see :data:`METADATA_KEYS`). The pipeline
applies the scalings it names: ``x' = (x - input_offset) * input_scale`` before
the graph and ``contribution = raw * output_scale + output_offset`` after it.

A *multi-scale* model (format 2, ``ednn.scales``) holds several such graphs in
one file, each with its own input and output: branch ``k`` is an EDNN on a copy
of the field coarsened by the block mean over ``factor`` pixels per axis, with
its own focus, context (both in coarse pixels), kind and output scaling. The
model's prediction is the sum of every branch's contributions, so the learned
weights of the branches are already folded into their output scalings. Its
top-level ``focus`` is the smallest block every branch tiles, the least common
multiple of ``factor * focus`` over the branches, and its ``context`` the
farthest reach, the largest ``factor * context``: as for one scale, a field
must be a whole number of focus blocks, and a chunk must see that far.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ednn_dask.errors import ModelFormatError
from ednn_dask.storage import atomic_output
from ednn_dask.tiling import Boundary, Tiling, coerce_axes, coerce_boundary

FORMAT_VERSION = 2
"""The newest metadata format this version reads; single-scale models are written as 1."""
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
    "scales",
)
SCALE_KEYS = ("factor", "focus", "context", "kind", "input", "output", "output_scale",
              "output_offset")
RASTER_KEYS = ("gamma", "cutoff", "species")


@dataclass(frozen=True)
class Scale:
    """One branch of a multi-scale model: an EDNN on the field coarsened by ``factor``.

    ``focus`` and ``context`` are in coarse pixels; ``input`` and ``output`` name the
    branch's tensors in the ONNX graph; ``output_scale`` and ``output_offset`` turn
    its raw output into contributions in target units (branch weight included).
    """

    factor: tuple[int, ...]
    focus: tuple[int, ...]
    context: tuple[int, ...]
    kind: Literal["dense", "tile"]
    input: str
    output: str
    output_scale: float = 1.0
    output_offset: float = 0.0

    def __post_init__(self) -> None:
        ndim = len(self.factor)
        if not (len(self.focus) == len(self.context) == ndim):
            raise ModelFormatError(
                f"a scale's factor {self.factor}, focus {self.focus} and context "
                f"{self.context} must have one value per spatial axis.")
        if min(self.factor) < 1 or min(self.focus) < 1 or min(self.context) < 0:
            raise ModelFormatError(
                f"a scale needs factor >= 1, focus >= 1 and context >= 0 per axis, got factor "
                f"{self.factor}, focus {self.focus}, context {self.context}.")
        if self.kind not in ("dense", "tile"):
            raise ModelFormatError(f"a scale's kind must be 'dense' or 'tile', got {self.kind!r}.")
        if not all(math.isfinite(v) for v in (self.output_scale, self.output_offset)):
            raise ModelFormatError(f"a scale's output scaling must be finite, got "
                                   f"{self.output_scale!r}, {self.output_offset!r}.")

    @property
    def block(self) -> tuple[int, ...]:
        """One focus block of this branch, in full-resolution pixels."""
        return tuple(f * b for f, b in zip(self.factor, self.focus, strict=True))

    @property
    def reach(self) -> tuple[int, ...]:
        """How far this branch sees beyond its focus blocks, in full-resolution pixels."""
        return tuple(f * c for f, c in zip(self.factor, self.context, strict=True))


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
    scales: tuple[Scale, ...] = ()
    format_version: int = 1

    def __post_init__(self) -> None:
        ndim = len(self.focus)
        if self.scales:
            self._check_scales()
        if self.kind not in ("dense", "tile"):
            raise ModelFormatError(f"ednn.kind must be 'dense' or 'tile', got {self.kind!r}.")
        if ndim not in (1, 2, 3):
            raise ModelFormatError(f"ednn.focus must have 1 to 3 axes, got {self.focus!r}.")
        if min(self.focus) < 1 or min(self.context, default=0) < 0:
            raise ModelFormatError(
                f"ednn.focus must be >= 1 and ednn.context >= 0 pixels per axis, got focus "
                f"{self.focus!r} and context {self.context!r}."
            )
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
            if not _is_element_symbol(symbol) or not math.isfinite(value):
                raise ModelFormatError(
                    f"ednn.reference_energies must map element symbols to finite eV, got "
                    f"{symbol!r}: {value!r}."
                )

    @classmethod
    def multiscale(cls, scales: tuple[Scale, ...], **fields: Any) -> ModelSpec:
        """The spec of a multi-scale model: focus, context and kind follow from ``scales``."""
        focus, context, kind = _geometry(scales)
        return cls(kind=kind, focus=focus, context=context, scales=tuple(scales),
                   format_version=2, **fields)

    def branch(self, index: int) -> ModelSpec:
        """Branch ``index`` of a multi-scale model as a single-scale spec on its coarse field."""
        s = self.scales[index]
        spacing = None if self.spacing is None else tuple(
            v * f for v, f in zip(self.spacing, s.factor, strict=True))
        return ModelSpec(
            kind=s.kind, focus=s.focus, context=s.context, boundary=self.boundary,
            channels=self.channels, target=self.target, target_unit=self.target_unit,
            dims=self.dims, spacing=spacing, spacing_unit=self.spacing_unit,
            input_offset=self.input_offset, input_scale=self.input_scale,
            output_offset=s.output_offset, output_scale=s.output_scale)

    def _check_scales(self) -> None:
        """A multi-scale spec: format 2, one scaling per branch, geometry that follows from them."""
        if self.format_version < 2:
            raise ModelFormatError("ednn.scales (a multi-scale model) needs ednn.format_version 2.")
        if len(self.scales) < 1 or any(len(s.factor) != len(self.focus) for s in self.scales):
            raise ModelFormatError(
                f"ednn.scales must list at least one branch with {len(self.focus)} values per "
                f"axis, got {self.scales!r}.")
        if self.output_scale != 1.0 or self.output_offset != 0.0:
            raise ModelFormatError("a multi-scale model scales each branch's output "
                                   "(ednn.scales[k].output_scale); its own must be 1 and 0.")
        names = [s.input for s in self.scales] + [s.output for s in self.scales]
        if len(set(names)) != len(names):
            raise ModelFormatError(f"the scales' input and output names must all differ, got "
                                   f"{names}.")
        want = _geometry(self.scales)
        if (self.focus, self.context, self.kind) != want:
            raise ModelFormatError(
                f"a multi-scale model's focus, context and kind follow from its scales: "
                f"{want[0]}, {want[1]}, {want[2]!r}; the metadata says {self.focus}, "
                f"{self.context}, {self.kind!r}.")

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
        keys = METADATA_KEYS if self.scales else tuple(k for k in METADATA_KEYS if k != "scales")
        return {NAMESPACE + key: json.dumps(values[key], sort_keys=True) for key in keys}

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
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
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
                scales=_scales(values.get("scales")),
                format_version=int(values["format_version"]),
            )
        except ModelFormatError:
            raise
        except (TypeError, ValueError) as err:
            raise ModelFormatError(f"malformed ednn metadata: {err}") from None


def _is_element_symbol(symbol: Any) -> bool:
    """'C', 'Si': one capital letter, then at most one lower-case letter."""
    return isinstance(symbol, str) and re.fullmatch(r"[A-Z][a-z]?", symbol) is not None


def _raster(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ModelFormatError(f"ednn.raster must be an object, got {value!r}.")
    if set(value) != set(RASTER_KEYS):
        raise ModelFormatError(f"ednn.raster must have exactly the keys {RASTER_KEYS}, got "
                               f"{sorted(value)}.")
    species = value["species"]
    return {
        "gamma": float(value["gamma"]),
        "cutoff": float(value["cutoff"]),
        "species": None if species is None else [_strict_int(z) for z in species],
    }


def _geometry(scales: tuple[Scale, ...]) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """Focus (the least common block), context (the farthest reach) and kind of ``scales``."""
    ndim = len(scales[0].factor)
    focus = tuple(math.lcm(*(s.block[a] for s in scales)) for a in range(ndim))
    context = tuple(max(s.reach[a] for s in scales) for a in range(ndim))
    return focus, context, "dense" if all(s.kind == "dense" for s in scales) else "tile"


def _scales(value: Any) -> tuple[Scale, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ModelFormatError(f"ednn.scales must be a list of objects, got {value!r}.")
    scales = []
    for v in value:
        if set(v) != set(SCALE_KEYS):
            raise ModelFormatError(f"each of ednn.scales must have exactly the keys {SCALE_KEYS}, "
                                   f"got {sorted(v)}.")
        scales.append(Scale(
            factor=_int_tuple(v["factor"]), focus=_int_tuple(v["focus"]),
            context=_int_tuple(v["context"]), kind=v["kind"], input=str(v["input"]),
            output=str(v["output"]), output_scale=float(v["output_scale"]),
            output_offset=float(v["output_offset"])))
    return tuple(scales)


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


def write_metadata(
    path: str | os.PathLike,
    spec: ModelSpec,
    out: str | os.PathLike | None = None,
    *,
    producer: tuple[str, str] | None = None,
) -> Path:
    """Write ``spec`` into the ONNX file at ``path`` as ednn metadata (needs the ``onnx`` package).

    Existing ``ednn.*`` keys are replaced, other metadata kept. Writes to ``out``
    (default: in place) through a temporary file and a rename. ``producer``
    (name, version) sets the ONNX producer fields.
    """
    import onnx

    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if not p.key.startswith(NAMESPACE)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in spec.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    if producer:
        model.producer_name, model.producer_version = producer
    target = Path(out or path)
    with atomic_output(target, overwrite=True) as tmp:
        onnx.save(model, str(tmp))
    return target
