"""Digital rock: exact functionals, chunk-wise generation and counting, exact models."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ednn_dask import load_model, score
from ednn_dask.cli import main
from ednn_dask.errors import DataSetError, OutputExistsError
from training.cubical import cell_counts, functionals
from training.rock import (
    FIELD,
    SPACING,
    TARGETS,
    evaluate_rock,
    exact_of,
    rock_samples,
    rock_volume,
    smooth_threshold,
    volume_counts,
    white_noise,
    write_rock_volume,
)

from .test_bad_inputs import one_line

MODELS = {t: f"models/rock-{t}.onnx" for t in TARGETS}


def binary(ndim: int, largest: int):
    return st.integers(1, largest).flatmap(
        lambda n: arrays(np.uint8, (n,) * ndim, elements=st.integers(0, 1)))


@settings(max_examples=60, deadline=None)
@given(st.one_of(binary(2, 12), binary(3, 7)))
def test_euler_characteristic_equals_scikit_image(pore):
    from skimage.measure import euler_number

    # scikit-image pads with background, as cell_counts(periodic=False) does;
    # connectivity=1 is the 6-connected (4 in 2-D) pore space of the cubical complex
    assert functionals(cell_counts(pore, periodic=False))["euler"] == euler_number(
        pore, connectivity=1)


@pytest.mark.parametrize(("shape", "euler"), [
    ("voxel", 1), ("two voxels apart", 2), ("hollow cube", 2), ("ring", 0)])
def test_euler_characteristic_of_known_shapes(shape, euler):
    pore = np.zeros((5, 5, 5), np.uint8)
    if shape == "voxel":
        pore[2, 2, 2] = 1
    elif shape == "two voxels apart":
        pore[1, 1, 1] = pore[3, 3, 3] = 1
    elif shape == "hollow cube":  # a sphere: one component, one cavity
        pore[1:4, 1:4, 1:4] = 1
        pore[2, 2, 2] = 0
    else:  # a square ring in a plane: one component, one tunnel
        pore[2, 1:4, 1:4] = 1
        pore[2, 2, 2] = 0
    assert functionals(cell_counts(pore))["euler"] == euler


@settings(max_examples=40, deadline=None)
@given(st.one_of(binary(2, 10), binary(3, 6)))
def test_volume_and_interface_area_equal_direct_counts(pore):
    exact = functionals(cell_counts(pore), SPACING)
    faces = sum(int((np.roll(pore, 1, a) != pore).sum()) for a in range(pore.ndim))
    assert exact["volume"] == pore.sum() * SPACING**pore.ndim
    assert exact["area"] == faces * SPACING ** (pore.ndim - 1)


@settings(max_examples=4, deadline=None)
@given(size=st.sampled_from([24, 40]), chunks=st.sampled_from([7, 16, 24]),
       sigma=st.sampled_from([1.0, 2.0]))
def test_chunked_generation_and_counting_equal_the_whole_volume(size, chunks, sigma):
    """Each chunk, smoothed with the noise of its periodic halo, is the whole volume
    smoothed periodically; the counts of the chunks (each with its upper halo) add up
    to the whole's."""
    volume = rock_volume(size, chunks=chunks, sigma=sigma, seed=5)
    whole = smooth_threshold(white_noise(5, size, [(0, size)] * 3), sigma, 0.25)
    np.testing.assert_array_equal(volume.compute(), whole)
    np.testing.assert_array_equal(volume_counts(volume).compute(), cell_counts(whole))


def test_white_noise_depends_on_the_seed_and_the_position_only():
    whole = white_noise(3, 20, [(0, 20)] * 3)
    wrapped = white_noise(3, 20, [(-4, 24), (15, 21), (0, 20)])
    np.testing.assert_array_equal(wrapped[4:24, :5], whole[:, 15:20])
    np.testing.assert_array_equal(wrapped[:4, 5:], whole[16:, :1])
    assert not np.array_equal(white_noise(4, 20, [(0, 20)] * 3), whole)
    big = white_noise(0, 64, [(0, 64)] * 3)
    assert abs(big.mean()) < 0.01 and abs(big.std() - 1) < 0.01
    assert abs(np.corrcoef(big[:, :, :-1].ravel(), big[:, :, 1:].ravel())[0, 1]) < 0.01


def test_rock_samples_are_reproducible_with_their_porosity():
    a, b = rock_samples(6, 32, seed=3), rock_samples(6, 32, seed=3)
    np.testing.assert_array_equal(a[FIELD], b[FIELD])
    porosity = a[FIELD].reshape(6, -1).mean(axis=1)
    assert np.abs(porosity - a["porosity"]).max() < 0.08  # threshold from the kernel's std


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The three rock models trained through the CLI on a small data set."""
    root = tmp_path_factory.mktemp("rock")
    assert main(["data", "rock", str(root / "d.zarr"), "--n", "30", "--L", "24"]) == 0
    for target in TARGETS:
        assert main(["train", "rock", "--target", target, "--data", str(root / "d.zarr"),
                     "--focus", "4", "--out", str(root / f"{target}.onnx"),
                     "--workdir", str(root / f"run-{target}")]) == 0
    return root


def test_trained_models_are_exact_on_fresh_rocks_through_every_path(trained):
    fresh = rock_samples(3, 40, seed=99)
    for target in TARGETS:
        model = load_model(trained / f"{target}.onnx")
        assert model.spec.spacing == (SPACING,) * 3 and model.spec.target == target
        session = ort.InferenceSession(str(trained / f"{target}.onnx"))
        for pore, exact in zip(fresh[FIELD], fresh[target], strict=True):
            dask_path = score(pore, model, chunks=8, spacing=SPACING).energy
            padded = np.pad(pore, 1, mode="wrap").astype(np.float32)[None, None]
            plain = float(session.run(None, {"field": padded})[0].sum(dtype=np.float64))
            assert round(dask_path) == round(plain) == exact
            assert abs(dask_path - exact) < 1e-6 * max(abs(exact), 1)


def test_a_stored_volume_scored_on_a_cluster_equals_its_exact_functionals(
        trained, local_cluster, tmp_path, capsys):
    made = write_rock_volume(tmp_path / "v.zarr", 64, chunks=32, client=local_cluster,
                             progress=False)
    assert exact_of(tmp_path / "v.zarr") == {t: made[t] for t in TARGETS}
    with pytest.raises(OutputExistsError):
        write_rock_volume(tmp_path / "v.zarr", 64, chunks=32, progress=False)
    for target in TARGETS:
        result = score(tmp_path / "v.zarr", load_model(trained / f"{target}.onnx"),
                       client=local_cluster, variable=FIELD)
        assert round(result.energy) == made[target]
    capsys.readouterr()
    assert main(["evaluate", "rock", "--model", str(trained / "euler.onnx"), "--data",
                 str(tmp_path / "v.zarr"), "--scheduler", local_cluster.scheduler.address,
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["exact_after_rounding"] and result["exact"] == made["euler"]


@pytest.mark.parametrize("target", list(TARGETS))
def test_shipped_rock_models_are_exact(target):
    result = evaluate_rock(MODELS[target], L=48, n=3, progress=False)
    assert result["max_ae"] < 1e-6 * 48**3


def test_bad_rock_requests_are_refused_in_one_line(trained, tmp_path, capsys):
    assert main(["train", "rock", "--out", str(tmp_path / "m.onnx")]) == 2
    one_line(capsys.readouterr().err, "train", "--target")
    assert main(["evaluate", "rock", "--model", "models/ising-2d-f1c1.onnx"]) == 2
    one_line(capsys.readouterr().err, "evaluate", "not a rock functional")
    plain = tmp_path / "plain.zarr"
    from ednn_dask import make_field, save_field

    save_field(make_field(np.zeros((8, 8, 8), np.uint8), name=FIELD, spacing=SPACING,
                          spacing_unit="µm"), plain)
    with pytest.raises(DataSetError, match="no exact functionals"):
        exact_of(plain)
