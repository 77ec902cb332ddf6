"""Export a trained EDNN's tile net to ONNX with its ednn metadata, and verify it.

A ``"dense"`` export has dynamic spatial axes: one graph scores a single tile
(output ``1 x 1``) or a whole chunk with its halo (one output per focus block).
A ``"tile"`` export takes exactly one tile per batch row. Either way the file is
written to a temporary name, checked against torch with onnxruntime, and only
then renamed into place.

A :class:`~training.multiscale.MultiScaleEDNN` becomes one graph with one input
and one output per branch (``field_k`` -> ``contribution_k``); each branch's
weight is folded into its output scaling in ``ednn.scales``.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import ednn_dask
from ednn_dask.errors import ConfigError, ModelFormatError
from ednn_dask.model import ModelSpec, TileModel, write_metadata
from ednn_dask.model.spec import Scale
from ednn_dask.storage import atomic_output, refuse_existing
from training.ednn import EDNN
from training.multiscale import MultiScaleEDNN
from training.precondition import baked

OPSET = 18


class _TileForm(nn.Module):
    """The tile net with its output shaped ``(N, 1, *ones)``."""

    def __init__(self, net: nn.Module, ndim: int):
        super().__init__()
        self.net, self.ndim = net, ndim

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.net(tiles).reshape(tiles.shape[0], 1, *(1,) * self.ndim)


class _Branches(nn.Module):
    """The export forms of a multi-scale model's branches side by side: K inputs, K outputs."""

    def __init__(self, forms: list[nn.Module]):
        super().__init__()
        self.forms = nn.ModuleList(forms)

    def forward(self, *fields: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(form(x) for form, x in zip(self.forms, fields, strict=True))


def spec_for(ednn: EDNN | MultiScaleEDNN, kind: str, channels: int, **fields: Any) -> ModelSpec:
    """The metadata of an EDNN: geometry and scaling from the module, the rest given."""
    if isinstance(ednn, MultiScaleEDNN):
        first = ednn.branches[0]
        if any((float(b.input_offset), float(b.input_scale))
               != (float(first.input_offset), float(first.input_scale)) for b in ednn.branches):
            raise ConfigError(
                "the branches of a multi-scale model scale their input differently; the file "
                "holds one input scaling for the field: set it with "
                "MultiScaleEDNN.set_input_scaling(offset, scale) before training.")
        scales = tuple(
            Scale(factor=factor, focus=b.tiling.focus, context=b.tiling.context, kind=kind,
                  input=f"field_{k}", output=f"contribution_{k}",
                  output_scale=float(w * b.output_scale), output_offset=float(w * b.output_offset))
            for k, (factor, b, w) in enumerate(zip(ednn.factors, ednn.branches,
                                                   ednn.weights.detach(), strict=True)))
        return ModelSpec.multiscale(
            scales, boundary=ednn.tiling.boundary, channels=channels,
            input_offset=float(first.input_offset), input_scale=float(first.input_scale),
            **fields)
    t = ednn.tiling
    return ModelSpec(
        kind=kind,
        focus=t.focus,
        context=t.context,
        boundary=t.boundary,
        channels=channels,
        input_offset=float(ednn.input_offset),
        input_scale=float(ednn.input_scale),
        output_offset=float(ednn.output_offset),
        output_scale=float(ednn.output_scale),
        **fields,
    )


def export_onnx(
    ednn: EDNN | MultiScaleEDNN,
    path: str | os.PathLike,
    *,
    channels: int = 1,
    kind: str = "dense",
    target: str = "energy",
    target_unit: str = "",
    spacing: tuple[float, ...] | None = None,
    spacing_unit: str | None = None,
    dims: tuple[str, ...] = (),
    raster: dict[str, Any] | None = None,
    reference_energies: dict[str, float] | None = None,
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
    atol: float = 1e-4,
    rtol: float = 1e-5,
) -> TileModel:
    """Write ``ednn``'s tile net as an ednn ONNX tile model and return it loaded.

    Parameters
    ----------
    kind : {"dense", "tile"}
        ``"dense"`` needs a tile net with ``to_dense``; ``"tile"`` exports the tile form
        (of every branch, for a multi-scale model).
    raster, reference_energies : dict, optional
        Atomistic models: how atoms become the input (gamma, cutoff, species) and the
        per-element energies (eV) added back to the prediction.
    provenance : dict, optional
        Recorded under ``ednn.provenance`` with the producer and versions added.
    atol, rtol : float
        Largest allowed |torch - onnxruntime| per raw contribution on the check inputs:
        ``atol + rtol * max |torch|`` (float32 sums round with the outputs' size, and the
        order of a convolution's sums differs between the two libraries and CPUs).
    """
    path = Path(path)
    refuse_existing(path, overwrite)
    ednn = baked(ednn)  # a whitened first layer becomes an ordinary convolution
    spec = spec_for(
        ednn, kind, channels, target=target, target_unit=target_unit, spacing=spacing,
        spacing_unit=spacing_unit, dims=dims, raster=raster,
        reference_energies=reference_energies,
        provenance={
            "producer": "ednn-dask training.export",
            "ednn_dask_version": ednn_dask.__version__,
            "torch_version": torch.__version__.split("+")[0],
            "opset": OPSET,
            "n_parameters": ednn.n_parameters,
            **(provenance or {}),
        },
    )
    multi = isinstance(ednn, MultiScaleEDNN)
    branches = list(ednn.branches) if multi else [ednn]
    forms = [_export_form(b, kind, channels) for b in branches]
    module = _Branches([m for m, _ in forms]) if multi else forms[0][0]
    with atomic_output(path, overwrite=True) as tmp:
        _torch_export(module, [x for _, x in forms], tmp, dynamic_spatial=kind == "dense",
                      names=[(s.input, s.output) for s in spec.scales])
        write_metadata(tmp, spec, producer=("ednn-dask", ednn_dask.__version__))
        model = TileModel.load(tmp)
        for (form, _), b, loaded in zip(forms, branches, model.branches or [model], strict=True):
            verify(form, loaded, b, channels, atol=atol, rtol=rtol)
    return TileModel.load(path)


def _export_form(ednn: EDNN, kind: str, channels: int):
    t = ednn.tiling
    net = ednn.tile_net.eval()
    if kind == "dense":
        # two and three focus blocks on the first axes: distinct sizes keep them symbolic
        shape = [(2 + i % 2) * f + 2 * c for i, (f, c) in enumerate(zip(t.focus, t.context))]
        return net.to_dense(t.focus).eval(), torch.randn(1, channels, *shape)
    if kind == "tile":
        return _TileForm(net, t.ndim).eval(), torch.randn(2, channels, *t.tile)
    raise ConfigError(f"kind must be 'dense' or 'tile', got {kind!r}.")


def _torch_export(module: nn.Module, examples: list[torch.Tensor], path: Path,
                  dynamic_spatial: bool, names: list[tuple[str, str]]):
    """Export ``module`` on ``examples``; ``names`` (input, output) per branch, or one pair."""
    tag = (lambda k: f"_{k}") if names else (lambda k: "")
    names = names or [("field", "contribution")]
    shapes = []
    for k, example in enumerate(examples):
        dims = {0: torch.export.Dim(f"batch{tag(k)}")}
        if dynamic_spatial:
            dims.update({2 + i: torch.export.Dim(f"s{i}{tag(k)}")
                         for i in range(example.dim() - 2)})
        shapes.append(dims)
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(examples),
            str(path),
            input_names=[i for i, _ in names],
            output_names=[o for _, o in names],
            dynamic_shapes={"fields": tuple(shapes)} if isinstance(module, _Branches)
            else tuple(shapes),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )


@torch.no_grad()
def verify(module: nn.Module, model: TileModel, ednn: EDNN, channels: int, atol: float,
           rtol: float) -> float:
    """Compare torch and onnxruntime on random tiles (and a chunk, for dense models)."""
    t = ednn.tiling
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(4, channels, *t.tile, generator=generator)]
    if model.spec.kind == "dense":
        shape = [3 * f + 2 * c for f, c in zip(t.focus, t.context, strict=True)]
        inputs.append(torch.randn(1, channels, *shape, generator=generator))
    worst, limit = 0.0, atol
    for x in inputs:
        expected = module(x).numpy().reshape(x.shape[0], -1)
        session = model.session(1)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        got = got.reshape(x.shape[0], -1)
        worst = max(worst, float(np.abs(got - expected).max()))
        limit = max(limit, atol + rtol * float(np.abs(expected).max()))
    if worst > limit:
        raise ModelFormatError(
            f"onnxruntime and torch disagree by {worst:.3g} (> {limit:.3g}) on the exported graph."
        )
    return worst

