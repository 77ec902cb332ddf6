"""The ONNX runtime side of a tile model: :class:`TileModel`, one session per process.

:func:`load_model` reads an ONNX file once, validates its metadata
(:class:`~ednn_dask.model.spec.ModelSpec`) and its signature with a single
``InferenceSession``, which the process then reuses for every chunk.

A model from someone else can compute, nothing more. Before onnxruntime sees it,
:func:`check_untrusted` refuses operators outside the ONNX standard's domains (a
custom operator is code from a shared library), tensors larger than
:data:`MAX_INITIALIZER_BYTES` (declared sizes: nothing is read first) and files
larger than :data:`MAX_MODEL_BYTES`; external weights must lie in the model's
folder. Loading runs no code of the model's: the ONNX file is parsed as protobuf
data (``onnx.load_from_string``, never pickle), and each session is built from
the checked bytes with ``SessionOptions`` that register no custom-op library
(``register_custom_ops_library`` is never called), accept the ONNX format only
(``session.load_model_format=ONNX``) and released opsets only
(``session.allow_released_opsets_only=1``), on the ``CPUExecutionProvider``
alone (no execution-provider library is loaded, so no precompiled ``EPContext``
blob runs).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ednn_dask.errors import ModelFormatError, StoreNotFoundError
from ednn_dask.model.spec import ModelSpec

#: the largest ONNX file, external weights included, that :meth:`TileModel.load` reads
MAX_MODEL_BYTES = 2**30
#: the largest single tensor (initializer or constant, dense size) a model may declare
MAX_INITIALIZER_BYTES = 2**28
#: the ONNX standard's operator domains; any other names operators that need a library
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})

# One InferenceSession per (model, thread count) per process: sessions cannot be
# pickled, so every worker process builds its own the first time it needs one.
_SESSIONS: dict[tuple[str, int], Any] = {}
_SESSIONS_LOCK = threading.Lock()


class TileModel:
    """An ONNX tile model with validated metadata; cheap to pickle, lazy to run.

    Pickling carries the ONNX bytes and the spec, never an ``InferenceSession``;
    a process builds its session on first use and reuses it for every chunk.
    """

    def __init__(self, onnx_bytes: bytes, spec: ModelSpec, path: str | None = None,
                 label: str | None = None):
        self.onnx_bytes = onnx_bytes
        self.spec = spec
        self.path = path
        self.label = label

    @classmethod
    def load(cls, path: str | os.PathLike) -> TileModel:
        """Read an ONNX file, validate its ednn metadata and its input/output signature."""
        path = Path(path)
        if not path.is_file():
            raise StoreNotFoundError(
                f"model file {str(path)!r} does not exist; check the path (the shipped models "
                "are in the repository's models/ folder)."
            )
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelFormatError(
                f"model file {str(path)!r} is {size / 1e9:.1f} GB, more than the "
                f"{MAX_MODEL_BYTES / 1e9:.1f} GB ednn-dask reads for a tile model; refusing it."
            )
        data = path.read_bytes()
        proto = _parse(data, path)
        check_untrusted(proto, path)
        data = _with_external_data_inlined(proto, data, path)
        session = _open_session(data, path)
        spec = ModelSpec.from_metadata(dict(session.get_modelmeta().custom_metadata_map))
        model = cls(data, spec, str(path))
        _SESSIONS.setdefault((model.sha256, 1), session)  # the one session of this load
        model._check_signature()
        return model

    def __reduce__(self):
        return (TileModel, (self.onnx_bytes, self.spec, self.path, self.label))

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"TileModel({self.name!r}, kind={s.kind!r}, focus={s.focus}, context={s.context}, "
            f"boundary={s.boundary!r}, target={s.target!r} [{s.target_unit}])"
        )

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        return Path(self.path).name if self.path else self.sha256[:12]

    @cached_property
    def branches(self) -> tuple[TileModel, ...]:
        """The branches of a multi-scale model, each a single-scale model on its coarse field.

        Each is the part of the graph between the branch's input and output
        (``onnx.utils.Extractor``), so it runs in a session of its own. Empty for
        a single-scale model.
        """
        if not self.spec.scales:
            return ()
        import onnx
        from onnx.utils import Extractor

        extractor = Extractor(onnx.load_from_string(self.onnx_bytes))
        return tuple(
            TileModel(extractor.extract_model([s.input], [s.output]).SerializeToString(),
                      self.spec.branch(k), label=f"{self.name}[scale {k}]")
            for k, s in enumerate(self.spec.scales))

    @cached_property
    def trunk_stride(self) -> tuple[int, ...] | None:
        """Pixels per axis between the samples of the tile net's strided trunk: the product
        of the strides of the convolutions whose weights are named ``trunk.*``, as the
        valid CNNs of ``training`` export them. ``None`` for other nets and multi-scale
        models. A net answers each registry of its input within one trunk stride
        differently (aliasing), and rolls by whole strides much more alike."""
        if self.spec.scales:
            return None
        import onnx

        stride = None
        for node in onnx.load_from_string(self.onnx_bytes).graph.node:
            if node.op_type == "Conv" and len(node.input) > 1 and node.input[1].startswith(
                    "trunk."):
                steps = next((list(a.ints) for a in node.attribute if a.name == "strides"),
                             [1] * len(self.spec.focus))
                stride = [s * t for s, t in zip(stride or [1] * len(steps), steps, strict=True)]
        return tuple(stride) if stride else None

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
        Returns ``(N, *grid)``. A multi-scale model runs through its :attr:`branches`
        (:func:`ednn_dask.inference.block_contributions` does that).
        """
        if self.spec.scales:
            raise ModelFormatError(
                f"model {self.name!r} is a multi-scale model: run its branches "
                f"(TileModel.branches) on their coarsened fields, or score blocks with "
                f"ednn_dask.inference.block_contributions.")
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
        if self.spec.scales:
            want = ([s.input for s in self.spec.scales], [s.output for s in self.spec.scales])
            have = ([i.name for i in inputs], [o.name for o in outputs])
            if sorted(have[0]) != sorted(want[0]) or sorted(have[1]) != sorted(want[1]):
                raise ModelFormatError(
                    f"multi-scale model {self.name!r} has inputs {have[0]} and outputs "
                    f"{have[1]}, but ednn.scales names inputs {want[0]} and outputs {want[1]}.")
            for branch in self.branches:
                branch._check_signature()
            return
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
    # no custom-op library is ever registered; only ONNX protobuf, only released opsets
    options.add_session_config_entry("session.load_model_format", "ONNX")
    options.add_session_config_entry("session.allow_released_opsets_only", "1")
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def _parse(data: bytes, path: Path):
    import onnx

    try:
        return onnx.load_from_string(data)  # protobuf data only; external weights not read
    except Exception as err:  # protobuf's DecodeError and friends
        raise ModelFormatError(
            f"{str(path)!r} is not a loadable ONNX model ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200] if str(err) else 'not ONNX protobuf'}); give an "
            "ONNX file exported by ednn-dask or one with ednn metadata added "
            "(ednn_dask.model.write_metadata)."
        ) from None


def check_untrusted(model, path: str | os.PathLike) -> None:
    """Refuse what a tile model needs not and an untrusted one could abuse.

    ``model`` is an ``onnx.ModelProto`` read from ``path``. Raises
    :class:`ModelFormatError` for an operator outside :data:`STANDARD_DOMAINS`
    (unless it is one of the model's own ONNX functions, whose bodies are checked
    the same way), and for a tensor (initializer, sparse initializer, constant)
    whose declared dense size exceeds :data:`MAX_INITIALIZER_BYTES`.
    """
    name = Path(path).name
    local = {(f.domain, f.name) for f in model.functions}
    graphs = [("graph", model.graph.node, _graph_tensors(model.graph))]
    graphs += [(f"function {f.name!r}", f.node, []) for f in model.functions]
    while graphs:
        where, nodes, tensors = graphs.pop()
        for node in nodes:
            if node.domain not in STANDARD_DOMAINS and (node.domain, node.op_type) not in local:
                raise ModelFormatError(
                    f"model {name!r} uses operator {node.op_type!r} of the custom domain "
                    f"{node.domain!r} (node {node.name!r} in its {where}); ednn-dask runs "
                    f"standard ONNX operators only (domains {sorted(STANDARD_DOMAINS)}), as a "
                    "custom operator is code from a library: re-export the model with standard "
                    "operators."
                )
            for attribute in node.attribute:
                tensors += [*attribute.tensors, *([attribute.t] if attribute.HasField("t")
                                                  else [])]
                if attribute.HasField("sparse_tensor"):
                    tensors.append(attribute.sparse_tensor)
                tensors += list(attribute.sparse_tensors)
                subgraphs = [*attribute.graphs, *([attribute.g] if attribute.HasField("g")
                                                  else [])]
                graphs += [(f"subgraph of node {node.name!r}", g.node, _graph_tensors(g))
                           for g in subgraphs]
        for tensor in tensors:
            size = _declared_bytes(tensor)
            if size > MAX_INITIALIZER_BYTES:
                dense = tensor.values if hasattr(tensor, "values") else tensor
                shape = list(getattr(tensor, "dims", None) or dense.dims)
                raise ModelFormatError(
                    f"model {name!r} declares tensor {dense.name!r} of shape {shape} "
                    f"({size / 1e6:,.0f} MB), more than the {MAX_INITIALIZER_BYTES / 1e6:,.0f} MB "
                    "ednn-dask accepts for one tensor of a tile network; refusing to load it "
                    "(nothing of it was read)."
                )


def _graph_tensors(graph) -> list:
    return [*graph.initializer, *graph.sparse_initializer]


def _declared_bytes(tensor) -> int:
    """The dense size a TensorProto or SparseTensorProto declares, from its shape alone."""
    import onnx

    if hasattr(tensor, "values"):  # SparseTensorProto: densified when loaded
        dims, data_type = tensor.dims, tensor.values.data_type
    else:
        dims, data_type = tensor.dims, tensor.data_type
    if data_type == onnx.TensorProto.STRING:
        return sum(len(v) for v in tensor.string_data)
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except (KeyError, ValueError, TypeError):
        itemsize = 8
    if any(d < 0 for d in dims):
        return 2**63  # not a shape: refused as too large to make sense of
    return math.prod(dims) * itemsize


def _with_external_data_inlined(model, data: bytes, path: Path) -> bytes:
    """One self-contained blob: weights kept beside the model are read in (from its folder only).

    Workers receive the model as bytes and may not share this file system, so
    external weights are embedded here; a reference outside the model's folder
    (``../``, an absolute path) is refused rather than read.
    """
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    external = [t for t in _get_all_tensors(model) if uses_external_data(t)]
    if not external:
        return data
    folder = path.resolve().parent
    total = len(data)
    for tensor in external:
        location = next(e.value for e in tensor.external_data if e.key == "location")
        target = (folder / location).resolve()
        if not target.is_relative_to(folder) or not target.is_file():
            raise ModelFormatError(
                f"model {path.name!r} keeps tensor {tensor.name!r} in {location!r}, which is "
                f"{'outside the model folder' if not target.is_relative_to(folder) else 'missing'}"
                f"; external weights must be files in {str(folder)!r}. Refusing to read it."
            )
        total += _declared_bytes(tensor)
    if total > MAX_MODEL_BYTES:
        raise ModelFormatError(
            f"model {path.name!r} with its external weights is {total / 1e9:.1f} GB, more than "
            f"the {MAX_MODEL_BYTES / 1e9:.1f} GB ednn-dask reads for a tile model; refusing it."
        )
    onnx.external_data_helper.load_external_data_for_model(model, str(folder))
    return model.SerializeToString()


def _open_session(data: bytes, path: Path):
    try:
        return _make_session(data, 1)
    except Exception as err:  # onnxruntime raises several types for "not a model"
        raise ModelFormatError(
            f"{str(path)!r} is not a loadable ONNX model ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}); give an ONNX file exported by ednn-dask or "
            "one with ednn metadata added (ednn_dask.model.write_metadata)."
        ) from None


def load_model(model: TileModel | str | os.PathLike) -> TileModel:
    """A :class:`TileModel` from a path (loaded and validated), or the model itself."""
    return model if isinstance(model, TileModel) else TileModel.load(model)


def session_keys() -> list[tuple[str, int]]:
    """(model SHA-256, threads) of every ``InferenceSession`` this process holds."""
    return list(_SESSIONS)
