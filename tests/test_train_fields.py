"""Your own fields: the data-set format, its stream, ``train fields`` and ``evaluate fields``.

Real Zarr stores on disk and real (short) torch training: a local target the
default net represents exactly is learnt, and the exported model scores a larger
field through ``ednn_dask.score``; checkpoints resume only what they were made from;
every bad data set is refused with one line and exit status 2.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import training
from ednn_dask import TileModel, make_field, score
from ednn_dask.cli import main
from ednn_dask.errors import CheckpointMismatchError, ConfigError, DataSetError
from training.datasets import save_dataset
from training.ednn import EDNN
from training.field_data import (
    FieldDataSpec,
    SampleStream,
    field_dataset,
    open_field_data,
    stream_hash,
)
from training.fields import evaluate_fields, train_fields, trunk_for
from training.nets import ValidCNN
from training.train import default_threads

FAST = {"lr": 1e-2, "lr_final": 1e-4, "batch_size": 16, "lbfgs_float64": False}


def local_energy(x: np.ndarray) -> np.ndarray:
    """Sum of x^2 and of the products of x- and y-neighbours (periodic): context 1 suffices."""
    x = np.asarray(x, np.float64)
    return (x * x + x * np.roll(x, 1, -1) + x * np.roll(x, 1, -2)).sum(axis=(-2, -1))


def write_store(path, n=64, L=8, seed=0, ndim=2, **kw):
    x = np.random.default_rng(seed).standard_normal((n, *(L,) * ndim)).astype(np.float32)
    y = local_energy(x) if ndim == 2 else (x.astype(np.float64) ** 2).sum(axis=(1, 2, 3))
    ds = field_dataset(x, y, spacing=0.5, spacing_unit="nm", target_unit="eV", field="phi",
                       target="energy", **kw)
    save_dataset(ds, path)
    return ds


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A density net trained on 256 8x8 fields of ``local_energy`` (about 12 s)."""
    tmp = tmp_path_factory.mktemp("fields")
    write_store(tmp / "d.zarr", n=256)
    metrics = train_fields(tmp / "d.zarr", tmp / "m.onnx", field="phi", target="energy",
                           focus=4, context=1, epochs=10, lbfgs_steps=300, threads=1,
                           workdir=tmp / "work", progress=False, **FAST)
    return tmp, metrics


def test_a_local_target_is_learnt_and_a_larger_field_scored_within_1_percent(trained):
    tmp, metrics = trained
    assert metrics["test"]["relative_mae"] < 0.02
    model = TileModel.load(tmp / "m.onnx")
    spec = model.spec
    assert (spec.dims, spec.spacing, spec.spacing_unit) == (("y", "x"), (0.5, 0.5), "nm")
    assert (spec.target, spec.target_unit) == ("energy", "eV")
    assert spec.provenance["data_hash"] == metrics["data_hash"]
    assert spec.provenance["metrics"]["n"] == metrics["n_test"]
    # 64x64 = 64 training fields' worth of pixels, scored by the dask pipeline
    big = np.random.default_rng(7).standard_normal((64, 64)).astype(np.float32)
    result = score(make_field(big, spacing=0.5, spacing_unit="nm"), model)
    exact = local_energy(big)
    assert abs(result.energy - exact) / abs(exact) < 0.01, (result.energy, exact)
    assert (tmp / "m.parity.png").stat().st_size > 1000


def test_torch_and_onnx_agree_on_the_test_split(trained):
    tmp, metrics = trained
    onnx = evaluate_fields(tmp / "m.onnx", tmp / "d.zarr", split="test")
    assert onnx["n"] == metrics["n_test"]
    assert onnx["mae"] == pytest.approx(metrics["test"]["mae"], rel=1e-3, abs=1e-4)


def test_evaluate_fields_cli_finds_the_split_and_refuses_other_data(trained, tmp_path, capsys):
    tmp, metrics = trained
    args = ["evaluate", "fields", "--model", str(tmp / "m.onnx"), "--data", str(tmp / "d.zarr")]
    assert main([*args, "--split", "val", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == metrics["n_val"]
    write_store(tmp_path / "other.zarr", n=20, seed=5)
    args[-1] = str(tmp_path / "other.zarr")
    assert main([*args, "--split", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "only defined on the data set" in err
    assert main([*args, "--json"]) == 0  # the whole store is fine
    assert json.loads(capsys.readouterr().out)["n"] == 20


def test_a_3d_data_set_trains_and_exports_its_geometry(tmp_path):
    write_store(tmp_path / "v.zarr", n=48, L=4, ndim=3)
    train_fields(tmp_path / "v.zarr", tmp_path / "v.onnx", field="phi", target="energy",
                 focus=2, context=0, epochs=2, lbfgs_steps=50, threads=1, progress=False,
                 workdir=tmp_path / "w", **FAST)
    spec = TileModel.load(tmp_path / "v.onnx").spec
    assert (spec.dims, spec.focus, spec.spacing) == (("z", "y", "x"), (2, 2, 2), (0.5,) * 3)
    config = json.loads((tmp_path / "w" / "metrics.json").read_text())["config"]
    assert config["lbfgs_samples"] == 1024  # 2^20 pixels' worth, at most 1,024 samples
    volume = np.random.default_rng(3).standard_normal((8, 8, 8)).astype(np.float32)
    exact = float((volume.astype(np.float64) ** 2).sum())
    got = score(make_field(volume, spacing=0.5, spacing_unit="nm"), TileModel.load(
        tmp_path / "v.onnx")).energy
    assert abs(got - exact) / exact < 0.1  # x^2 per voxel, pointwise: learnt quickly


def _cli_train(store, out, work, *extra):
    return main(["train", "fields", "--data", str(store), "--field", "phi", "--target",
                 "energy", "--focus", "4", "--context", "1", "--out", str(out), "--workdir",
                 str(work), "--threads", "1", "--overwrite", *extra])


def test_an_interrupted_run_resumes_and_a_changed_one_is_refused(tmp_path, capsys, monkeypatch):
    import training.train as train_module

    write_store(tmp_path / "d.zarr", n=40)
    work, out = tmp_path / "work", tmp_path / "m.onnx"
    save = train_module._save_checkpoint

    def interrupted(path, ednn, optimizer, scheduler, best, state):
        save(path, ednn, optimizer, scheduler, best, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_checkpoint", interrupted)
    assert _cli_train(tmp_path / "d.zarr", out, work, "--epochs", "4") == 130
    assert not out.exists()
    monkeypatch.setattr(train_module, "_save_checkpoint", save)
    assert _cli_train(tmp_path / "d.zarr", out, work, "--epochs", "4", "--json") == 0
    state = json.loads(torch.load(work / "checkpoint.pt", weights_only=True)["state"])
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3, 4]  # continued, not redone
    capsys.readouterr()
    # other data, another net, other settings, fewer epochs: refused in one line
    write_store(tmp_path / "other.zarr", n=40, seed=1)
    for store, extra, says in [
        (tmp_path / "other.zarr", ["--epochs", "4"], "other data"),
        (tmp_path / "d.zarr", ["--epochs", "4", "--net", "window"], "net"),
        (tmp_path / "d.zarr", ["--epochs", "4", "--seed", "3"], "seed=0 (now 3)"),
        (tmp_path / "d.zarr", ["--epochs", "3"], "more than epochs=3"),
    ]:
        assert _cli_train(store, out, work, *extra) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "checkpoint" in err and says in err, err
    with pytest.raises(CheckpointMismatchError, match="other data"):  # Python: the same
        train_fields(tmp_path / "other.zarr", out, field="phi", target="energy", focus=4,
                     context=1, epochs=4, workdir=work, threads=1, overwrite=True,
                     progress=False)


def _bad_store(path, problem):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 4, 4)).astype(np.float32), rng.standard_normal(6)
    ds = field_dataset(x, y, spacing=1.0, spacing_unit="nm", target_unit="eV", field="phi",
                       target="energy")
    if problem == "missing target":
        ds = ds.drop_vars("energy")
    elif problem == "wrong dims":
        ds = ds.assign(phi=ds["phi"].transpose("y", "sample", "x"))
    elif problem == "NaN labels":
        ds["energy"][3] = np.nan
    elif problem == "no spacing":
        ds = ds.drop_vars(["y", "x"])
        ds["phi"].attrs = {}
    elif problem == "no target unit":
        del ds["energy"].attrs["units"]
    elif problem == "NaN in a field":
        ds["phi"][2, 1, 1] = np.nan
    elif problem == "ragged sizes":
        ds.drop_vars("energy").to_zarr(path, zarr_format=3, consolidated=False)
        target = zarr.open_group(path, mode="a").create_array(
            "energy", shape=(5,), dtype="f8", dimension_names=["sample"])
        target[:] = 1.0
        target.attrs["units"] = "eV"
        return
    ds.to_zarr(path, zarr_format=3, consolidated=False)


@pytest.mark.parametrize(("problem", "says"), [
    ("missing target", "has no target variable 'energy'"),
    ("wrong dims", "it must have dims ('sample', *spatial)"),
    ("ragged sizes", "ragged sizes"),
    ("NaN labels", "non-finite value(s) (nan at sample 3)"),
    ("no spacing", "has no pixel spacing"),
    ("no target unit", "has no 'units' attr"),
    ("NaN in a field", "NaN or Inf in sample 2"),
])
def test_a_bad_data_set_is_refused_with_one_line_and_exit_2(tmp_path, capsys, problem, says):
    _bad_store(tmp_path / "bad.zarr", problem)
    code = main(["train", "fields", "--data", str(tmp_path / "bad.zarr"), "--field", "phi",
                 "--target", "energy", "--focus", "2", "--context", "1", "--epochs", "1",
                 "--threads", "1", "--out", str(tmp_path / "m.onnx"),
                 "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("ednn-dask train: error:")
    assert says in err
    assert not (tmp_path / "m.onnx").exists()


def test_ragged_numpy_samples_and_uneven_coords_are_refused(tmp_path):
    with pytest.raises(DataSetError, match="different shapes"):
        field_dataset([np.zeros((4, 4)), np.zeros((4, 6))], [0.0, 1.0], spacing=1.0,
                      spacing_unit="nm", target_unit="eV")
    ds = field_dataset(np.zeros((4, 4, 4)), np.zeros(4), spacing=1.0, spacing_unit="nm",
                       target_unit="eV")
    ds = ds.assign_coords(x=("x", [0.0, 1.0, 2.0, 4.0], {"units": "nm"}))
    save_dataset(ds, tmp_path / "d.zarr")
    with pytest.raises(DataSetError, match="not evenly spaced"):
        open_field_data(tmp_path / "d.zarr", "field", "target")


def test_spacing_comes_from_coords_or_attrs(tmp_path):
    ds = field_dataset(np.zeros((3, 2, 4, 6)), np.zeros(3), spacing=(0.25, 0.5),
                       spacing_unit="um", target_unit="g", channels=True)
    save_dataset(ds, tmp_path / "c.zarr")
    _, spec = open_field_data(tmp_path / "c.zarr", "field", "target")
    assert (spec.shape, spec.spacing, spec.spacing_unit) == ((3, 2, 4, 6), (0.25, 0.5), "um")
    bare = ds.drop_vars(["y", "x"])
    bare["field"].attrs = {"spacing": [1.5, 1.5], "spacing_unit": "mm"}
    save_dataset(bare, tmp_path / "a.zarr")
    _, spec = open_field_data(tmp_path / "a.zarr", "field", "target")
    assert (spec.spacing, spec.spacing_unit, spec.has_channel) == ((1.5, 1.5), "mm", True)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 40), slab=st.integers(1, 12), buffer=st.integers(1, 30),
       batch=st.integers(1, 9), seed=st.integers(0, 2**16), data=st.data())
def test_the_stream_yields_each_chosen_sample_once_with_its_own_field(n, slab, buffer, batch,
                                                                      seed, data):
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2)
    ds = xr.Dataset({"f": (("sample", "y", "x"), x)})
    spec = FieldDataSpec("mem", "f", "t", ("y", "x"), (n, 1, 2, 2), False, (1.0, 1.0), "nm",
                         "1", 1)
    stream = SampleStream(ds, spec, buffer=buffer, slab=slab)
    chosen = np.array(sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1))))
    seen = []
    for idx, xb in stream.batches(chosen, batch, np.random.default_rng(seed)):
        assert len(idx) <= batch
        np.testing.assert_array_equal(xb[:, 0], x[idx])
        seen += idx.tolist()
    assert sorted(seen) == chosen.tolist()
    shuffled = np.random.default_rng(seed).permutation(chosen)
    np.testing.assert_array_equal(stream.take(shuffled)[:, 0], x[shuffled])


def test_the_streamed_hash_ignores_last_bits_of_float64_only(tmp_path):
    ds = write_store(tmp_path / "d.zarr", n=37)
    lazy, _ = open_field_data(tmp_path / "d.zarr", "phi", "energy")
    digest = stream_hash(lazy, ["phi", "energy"], samples=5)
    assert digest == stream_hash(ds, ["phi", "energy"], samples=256)  # any slab size
    energy = ds["energy"].values
    assert energy.dtype == np.float64
    # the same data computed on another CPU: float64 targets a few ulps apart
    ulps = ds.assign(energy=("sample", np.nextafter(np.nextafter(energy, np.inf), np.inf)))
    assert stream_hash(ulps, ["phi", "energy"]) == digest
    for changed in (ds.assign(energy=("sample", energy * (1 + 1e-5))),
                    ds.assign(phi=ds["phi"] + np.float32(1e-3)),
                    ds.assign(energy=ds["energy"].astype(np.float32)),
                    ds.isel(sample=slice(1, None))):
        assert stream_hash(changed, ["phi", "energy"]) != digest


def test_a_net_built_for_another_context_is_refused():
    with pytest.raises(ConfigError, match=r"built for context \(1, 1\).*context is \(2, 2\)"):
        EDNN(ValidCNN(2, 1, (4, 4), (1, 1)), 4, 2, "periodic", ndim=2)
    EDNN(ValidCNN(2, 1, (4, 4), (2, 2)), 4, 2, "periodic", ndim=2)  # matching: accepted


@pytest.mark.parametrize("net, quadratic", [("quadratic", True), ("density", False)])
def test_the_quadratic_net_is_a_quadratic_form_of_the_tile(net, quadratic):
    """Along any line t * x its output is a polynomial of degree 2: third differences vanish."""
    from training.fields import build_field_ednn

    torch.manual_seed(0)
    ednn = build_field_ednn(net, 2, 1, 4, 3, "periodic").double()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        f = [float(ednn(t * x)) for t in range(4)]
    third = f[3] - 3 * f[2] + 3 * f[1] - f[0]
    assert (abs(third) < 1e-9 * max(map(abs, f))) == quadratic


def test_threads_default_to_the_idle_cores_we_may_use():
    import os
    import subprocess
    import sys
    import time

    cores = len(os.sched_getaffinity(0))
    assert 1 <= default_threads() <= cores
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert default_threads() <= max(1, cores - 1)  # one core is taken now
    finally:
        spin.kill()
        spin.wait()


def test_the_lbfgs_batch_holds_about_a_million_pixels():
    from training.fields import lbfgs_samples

    assert [lbfgs_samples((n,) * d) for n, d in ((32, 2), (16, 3), (64, 3), (4, 3))] \
        == [1024, 256, 64, 1024]


def test_the_trunk_sees_exactly_the_context():
    for context in range(8):
        assert sum((k - 1) // 2 for _, k, _ in trunk_for(context)) == context


def test_training_exports_its_public_pieces():
    assert {"fit", "EDNN", "MultiScaleEDNN", "export_onnx", "train_fields",
            "field_dataset"} <= set(training.__all__)
    for name in training.__all__:
        assert getattr(training, name) is not None
    with pytest.raises(AttributeError):
        training.no_such_thing  # noqa: B018
