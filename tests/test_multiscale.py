"""Multi-scale models: the format, exact energies, and equal numbers on every path.

Tolerances as in test_score.py: the paths run the same float32 networks and differ
in how sums associate inside a layer, and here also in how the block means are
summed (torch's average pooling against numpy's mean).
"""

from __future__ import annotations

import pickle

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ednn_dask import contributions, score
from ednn_dask.cli import main
from ednn_dask.errors import ModelFormatError, NonFiniteFieldError
from ednn_dask.model import ModelSpec, TileModel, write_metadata
from ednn_dask.model.spec import Scale
from ednn_dask.tiling import block_mean
from tests.helpers import exact_ising_ednn, ising_energy_np, random_multiscale
from tests.test_score import _chunks_for, _grid_for, assert_same, spins, torch_contributions
from training.multiscale import MultiScaleEDNN

RTOL = 2e-5


def _export(ednn, path, **kw):
    from training.export import export_onnx

    return export_onnx(ednn, path, **kw)


@pytest.fixture(scope="module")
def multiscale2d_open(model_dir):
    ednn = random_multiscale(2, 0.5, seed=3, channels=2)
    return ednn, _export(ednn, model_dir / "ms2d-open.onnx", channels=2)


@pytest.fixture(scope="module")
def multiscale3d(model_dir):
    ednn = random_multiscale(3, "periodic", seed=5)
    return ednn, _export(ednn, model_dir / "ms3d.onnx")


@pytest.fixture(scope="module")
def exact_two_scales(model_dir):
    """Ising bonds of the field plus half the Ising bonds of its 2x2 block means."""
    model = MultiScaleEDNN([exact_ising_ednn(2), exact_ising_ednn(2)], [1, 2])
    with torch.no_grad():
        model.weights.copy_(torch.tensor([1.0, 0.5]))
    return model, _export(model, model_dir / "exact-ms.onnx", target_unit="J")


# --- the format -------------------------------------------------------------------------


def test_spec_geometry_and_metadata_round_trip(multiscale2d):
    _, model = multiscale2d
    spec = model.spec
    # lcm(1 * 2, 2 * 2) and max(1 * 1, 2 * 2)
    assert (spec.focus, spec.context, spec.kind, spec.format_version) == ((4, 4), (4, 4),
                                                                         "dense", 2)
    assert [(s.factor, s.focus, s.context) for s in spec.scales] == [
        ((1, 1), (2, 2), (1, 1)), ((2, 2), (2, 2), (2, 2))]
    assert ModelSpec.from_metadata(spec.to_metadata()) == spec
    assert [b.spec.focus for b in model.branches] == [(2, 2), (2, 2)]
    assert model.branches[1].spec.output_scale == pytest.approx(-1.5 * 0.5)


def test_single_scale_files_stay_format_1(cnn2d):
    meta = cnn2d[1].spec.to_metadata()
    assert "ednn.scales" not in meta and meta["ednn.format_version"] == "1"
    assert cnn2d[1].branches == ()


@pytest.mark.parametrize("change, message", [
    ({"ednn.focus": "[8, 8]"}, r"focus, context and kind follow from its scales: \(4, 4\)"),
    ({"ednn.format_version": "1"}, "needs ednn.format_version 2"),
    ({"ednn.output_scale": "2.0"}, "its own must be 1 and 0"),
    ({"ednn.scales": '[{"factor": [1, 1]}]'}, "must have exactly the keys"),
])
def test_bad_scales_are_refused(multiscale2d, change, message):
    meta = {**multiscale2d[1].spec.to_metadata(), **change}
    with pytest.raises(ModelFormatError, match=message):
        ModelSpec.from_metadata(meta)


def test_scales_that_name_other_tensors_are_refused(multiscale2d, tmp_path):
    _, model = multiscale2d
    spec = model.spec
    wrong = ModelSpec.multiscale(
        tuple(Scale(s.factor, s.focus, s.context, s.kind, s.input, s.output + "x")
              for s in spec.scales), boundary=spec.boundary, channels=1, target="energy")
    path = write_metadata(model.path, wrong, tmp_path / "wrong.onnx")
    with pytest.raises(ModelFormatError, match="has inputs .* but ednn.scales names"):
        TileModel.load(path)


def test_branches_with_different_input_scaling_are_refused(tmp_path):
    from ednn_dask.errors import ConfigError

    model = random_multiscale(2, "periodic")
    model.branches[1].input_scale.fill_(3.0)
    with pytest.raises(ConfigError, match="set_input_scaling"):
        _export(model, tmp_path / "m.onnx")


def test_a_multiscale_model_refuses_to_run_as_one_graph(multiscale2d):
    with pytest.raises(ModelFormatError, match="multi-scale model: run its branches"):
        multiscale2d[1].run(np.zeros((1, 1, 12, 12), np.float32))


# --- exact energies and equal paths -------------------------------------------------------


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(by=st.integers(1, 6), bx=st.integers(1, 6), cy=st.integers(1, 6), cx=st.integers(1, 6),
       seed=st.integers(0, 2**16), periodic=st.booleans())
def test_exact_two_scale_ising(exact_two_scales, by, bx, cy, cx, seed, periodic):
    """Block-constant spins: both branches see +-1 spins, so float32 is exact."""
    _, model = exact_two_scales
    coarse = spins((max(by, 2), max(bx, 2)), seed)
    lattice = np.kron(coarse, np.ones((2, 2), np.int8))
    boundary = "periodic" if periodic else 0.0
    expected = (ising_energy_np(lattice.astype(float), open_boundary=not periodic)
                + 0.5 * ising_energy_np(coarse.astype(float), open_boundary=not periodic))
    chunks = (2 * min(cy, coarse.shape[0]), 2 * min(cx, coarse.shape[1]))
    assert score(lattice, model, chunks=chunks, boundary=boundary).energy == expected
    assert contributions(lattice, model, boundary=boundary).sum() == expected


@pytest.mark.parametrize("fixture", ["multiscale2d", "multiscale2d_open"])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_all_paths_agree(request, fixture, data):
    """torch, the numpy tile and dense paths and dask, over chunkings of whole blocks."""
    ednn, model = request.getfixturevalue(fixture)
    spec = model.spec
    shape = _grid_for(data, spec.focus, spec.context, spec.boundary, max_blocks=4)
    field = np.random.default_rng(data.draw(st.integers(0, 99))).normal(
        size=(spec.channels, *shape) if spec.channels > 1 else shape).astype(np.float32)
    reference = torch_contributions(ednn, field)
    scale = np.abs(reference).max() + 1e-3
    assert_same(torch_contributions(ednn, field, dense=True), reference, scale)
    for method in ("tiles", "dense"):
        assert_same(contributions(field, model, method=method), reference, scale)
    chunks = _chunks_for(data, shape, spec.focus, spec.context)
    result = score(field, model, chunks=chunks)
    assert_same(result.contributions.values, reference, scale)
    assert abs(result.energy - reference.sum()) <= RTOL * scale * reference.size


def test_all_paths_agree_3d(multiscale3d):
    ednn, model = multiscale3d
    field = np.random.default_rng(4).normal(size=(8, 4, 12)).astype(np.float32)
    reference = torch_contributions(ednn, field)
    scale = np.abs(reference).max() + 1e-3
    for method in ("tiles", "dense"):
        assert_same(contributions(field, model, method=method), reference, scale)
    assert_same(score(field, model, chunks=(4, 4, 8)).contributions.values, reference, scale)


def test_plain_onnxruntime_runs_the_file(multiscale2d):
    """What docs/reference/model-format.md tells other tools to do, against score()."""
    _, model = multiscale2d
    field = np.random.default_rng(1).normal(size=(16, 12)).astype(np.float32)
    session = ort.InferenceSession(model.path)
    spec, feeds = model.spec, {}
    x = (field - spec.input_offset) * spec.input_scale
    for s in spec.scales:
        coarse = block_mean(x, s.factor)
        feeds[s.input] = np.pad(coarse, [(c, c) for c in s.context], mode="wrap")[None, None]
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds),
                       strict=True))
    energy = sum(float((outputs[s.output] * s.output_scale + s.output_offset).sum())
                 for s in spec.scales)
    assert energy == pytest.approx(score(field, model).energy, rel=1e-5)


def test_nan_is_located_at_full_resolution(multiscale2d):
    _, model = multiscale2d
    field = np.zeros((16, 16), np.float32)
    field[9, 5] = np.nan
    for chunks in (16, 8):
        with pytest.raises(NonFiniteFieldError, match=r"y=9, x=5"):
            score(field, model, chunks=chunks)
    with pytest.raises(NonFiniteFieldError, match=r"y=9, x=5"):
        contributions(field, model)


def test_pickled_model_keeps_its_branches(multiscale2d):
    """What a worker receives (scoring on a real cluster: test_score.py)."""
    _, model = multiscale2d
    again = pickle.loads(pickle.dumps(model))
    assert again.sha256 == model.sha256
    assert [b.sha256 for b in again.branches] == [b.sha256 for b in model.branches]


def test_info_lists_the_scales(multiscale2d, capsys):
    _, model = multiscale2d
    assert main(["info", model.path]) == 0
    out = capsys.readouterr().out
    assert "scale 0: factor 1x1, focus 2x2, context 1x1 (dense;" in out
    assert "scale 1: factor 2x2, focus 2x2, context 2x2 (dense;" in out
