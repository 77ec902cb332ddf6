from __future__ import annotations

import pytest

from tests import helpers

# the atomistic test model: reference energies and rasterization in its metadata
MU = {"B": -41.5, "C": -57.25, "N": -85.5}
SPECIES = [5, 6, 7]
RASTER = {"gamma": 0.2, "cutoff": 1.0, "species": SPECIES}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def _export(ednn, path, **kw):
    from training.export import export_onnx

    return export_onnx(ednn, path, **kw)


@pytest.fixture(scope="session")
def exact_ising2d(model_dir):
    """(EDNN, dense ONNX model, tile ONNX model) computing the 2-D Ising energy exactly."""
    ednn = helpers.exact_ising_ednn(2)
    dense = _export(ednn, model_dir / "exact2d.onnx", target_unit="J")
    tile = _export(ednn, model_dir / "exact2d-tile.onnx", kind="tile", target_unit="J")
    return ednn, dense, tile


@pytest.fixture(scope="session")
def exact_ising3d(model_dir):
    ednn = helpers.exact_ising_ednn(3)
    return ednn, _export(ednn, model_dir / "exact3d.onnx", target_unit="J")


@pytest.fixture(scope="session")
def cnn2d(model_dir):
    """Random 2-channel valid CNN with per-axis focus/context and a constant boundary."""
    ednn = helpers.random_cnn_ednn(2, 2, (4, 2), (2, 1), 0.5)
    return ednn, _export(ednn, model_dir / "cnn2d.onnx", channels=2, spacing=(0.1, 0.1),
                         spacing_unit="angstrom")


@pytest.fixture(scope="session")
def cnn2d_mean(model_dir):
    """As ``cnn2d`` with SiLU and the averaged per-pixel readout (windows overlap on axis 0)."""
    ednn = helpers.random_cnn_ednn(2, 2, (4, 2), (2, 1), "periodic", seed=2, readout="mean",
                                   activation="silu")
    return ednn, _export(ednn, model_dir / "cnn2d-mean.onnx", channels=2)


@pytest.fixture(scope="session")
def cnn2d_aa(model_dir):
    """A valid CNN with two strided layers, each anti-aliased (a fixed blur at its stride)."""
    ednn = helpers.random_cnn_ednn(2, 1, (4, 4), (3, 3), "periodic", seed=3,
                                   trunk=((4, 3, 2), (4, 1, 2)), antialias="blurpool")
    return ednn, _export(ednn, model_dir / "cnn2d-aa.onnx")


@pytest.fixture(scope="session")
def cnn2d_pf(model_dir):
    """A valid CNN with two strided layers, each prefiltered (a fixed blur before it)."""
    ednn = helpers.random_cnn_ednn(2, 1, (4, 4), (4, 4), "periodic", seed=4,
                                   trunk=((4, 3, 2), (4, 1, 2)), antialias="prefilter")
    return ednn, _export(ednn, model_dir / "cnn2d-pf.onnx")


@pytest.fixture(scope="session")
def cnn3d(model_dir):
    ednn = helpers.random_cnn_ednn(3, 1, (2, 2, 2), (1, 1, 1), "periodic", seed=1)
    return ednn, _export(ednn, model_dir / "cnn3d.onnx")


@pytest.fixture(scope="session")
def mlp2d(model_dir):
    ednn = helpers.random_mlp_ednn(2)
    return (ednn, _export(ednn, model_dir / "mlp2d.onnx"),
            _export(ednn, model_dir / "mlp2d-tile.onnx", kind="tile"))


@pytest.fixture(scope="module")
def local_cluster():
    """A real distributed cluster with two worker processes."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                     dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="session")
def atomistic(tmp_path_factory):
    """A random (untrained) hexagonal EDNN exported with its atomistic metadata."""
    import torch

    from training.atomistic import SPACING, build_net
    from training.export import export_onnx

    torch.manual_seed(0)
    ednn = build_net(3)
    ednn.output_scale.fill_(0.5)
    path = tmp_path_factory.mktemp("atomistic") / "hex.onnx"
    model = export_onnx(ednn, path, channels=3, target="energy", target_unit="eV",
                        spacing=SPACING, spacing_unit="angstrom", dims=("y", "x"),
                        raster=RASTER, reference_energies=MU)
    return ednn, model


@pytest.fixture(scope="session")
def multiscale2d(model_dir):
    """A random two-scale model (tests/helpers.py: random_multiscale), periodic."""
    ednn = helpers.random_multiscale(2, "periodic")
    return ednn, _export(ednn, model_dir / "ms2d.onnx", target_unit="J")
