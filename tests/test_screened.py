"""The screened system's energies are exact: the FFT pair sum equals the sum over pairs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ednn_dask.errors import ConfigError, FieldError
from training.screened import CUTOFF, MIN_SIDE, SCREENING_LENGTH, screened_dataset, screened_energy


def pair_sum_energy(x: np.ndarray) -> float:
    """The energy by its definition: bonds, then ½ Σ_{p≠q} over every pair of occupied sites."""
    L = x.shape[0]
    bonds = -float((x * (np.roll(x, -1, 1) + np.roll(x, -1, 0))).sum())
    sites = np.argwhere(x != 0)
    values = x[tuple(sites.T)].astype(np.float64)
    d = np.abs(sites[:, None, :] - sites[None, :, :])
    d = np.minimum(d, L - d)  # minimum image per axis
    r = np.hypot(d[..., 0], d[..., 1])
    with np.errstate(divide="ignore"):
        k = np.where((r > 0) & (r <= CUTOFF), np.exp(-r / SCREENING_LENGTH) / r, 0.0)
    return bonds + 0.5 * float(values @ k @ values)


@settings(max_examples=6, deadline=None)
@given(L=st.integers(MIN_SIDE, 80), seed=st.integers(0, 2**16))
def test_fft_energy_equals_the_pair_sum(L, seed):
    rng = np.random.default_rng(seed)
    x = rng.choice(np.float32([-1, 0, 1]), size=(L, L), p=[0.1, 0.8, 0.1])
    assert screened_energy(x) == pytest.approx(pair_sum_energy(x), rel=1e-12, abs=1e-9)


def test_two_charges_at_known_distances():
    L = 70
    for dy, dx, expected in [(0, 1, -1.0 + np.exp(-1 / 8)), (3, 4, np.exp(-5 / 8) / 5),
                             (0, 33, 0.0), (0, 40, np.exp(-30 / 8) / 30)]:  # 40 wraps to 30
        x = np.zeros((L, L))
        x[10, 10] = x[10 + dy, 10 + dx] = 1.0
        assert screened_energy(x) == pytest.approx(expected, abs=1e-12)


def test_data_set_is_reproducible_and_exact():
    a, b = screened_dataset(3, 65, seed=4), screened_dataset(3, 65, seed=4)
    assert a.identical(b)
    assert a.field.dtype == np.float32 and set(np.unique(a.field)) <= {-1.0, 0.0, 1.0}
    np.testing.assert_allclose(a.target, [pair_sum_energy(f) for f in a.field.values],
                               rtol=1e-12, atol=1e-9)
    assert a.target.attrs["units"] == "J"


def test_small_or_ragged_lattices_are_refused():
    with pytest.raises(ConfigError, match="L >= 65"):
        screened_energy(np.zeros((64, 64)))
    with pytest.raises(FieldError, match="square"):
        screened_energy(np.zeros((70, 66)))


def test_data_command_writes_the_screened_set(tmp_path, capsys):
    import json

    from ednn_dask.cli import main
    from training.datasets import load_dataset

    out = tmp_path / "screened.zarr"
    assert main(["data", "screened", str(out), "--n", "4", "--L", "66", "--seed", "2",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 4
    stored = load_dataset(out).load()
    assert stored.identical(screened_dataset(4, 66, seed=2))
    assert main(["data", "screened", str(tmp_path / "small.zarr"), "--L", "40"]) == 2
    assert "L >= 65" in capsys.readouterr().err


def test_train_fields_with_scales_then_evaluate_screened(tmp_path, capsys):
    """A two-scale model: its file, its provenance, its evaluation on the command line."""
    import json

    import torch

    from ednn_dask.cli import main
    from ednn_dask.model import load_model
    from training.fields import train_fields

    store = tmp_path / "s.zarr"
    assert main(["data", "screened", str(store), "--n", "24", "--L", "68"]) == 0
    out = tmp_path / "ms.onnx"
    before = torch.get_num_threads()
    try:
        train_fields(store, out, field="field", target="target", scales="1:4:2,4:1:2",
                     epochs=1, lbfgs_steps=0, threads=1, workdir=tmp_path / "w",
                     progress=False)
    finally:
        torch.set_num_threads(before)
    spec = load_model(out).spec
    assert [(s.factor, s.focus, s.context) for s in spec.scales] == [
        ((1, 1), (4, 4), (2, 2)), ((4, 4), (1, 1), (2, 2))]
    assert (spec.focus, spec.context, spec.spacing) == ((4, 4), (8, 8), None)
    assert spec.provenance["scales"] == [[1, 4, 2], [4, 1, 2]]
    capsys.readouterr()
    assert main(["evaluate", "screened", "--model", str(out), "--L", "68", "--n", "3",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 3 and result["mae_over_std"] > 0 and result["seconds_per_pixel"] > 0


@pytest.mark.parametrize("extra, says", [
    (["--scales", "1:4"], "FACTOR:FOCUS:CONTEXT"),
    (["--scales", "1:4:2", "--focus", "4", "--context", "2"], "not both"),
    (["--scales", "0:4:2"], "factor >= 1"),
])
def test_bad_scales_are_refused_in_one_line(tmp_path, capsys, extra, says):
    from ednn_dask.cli import main

    store = tmp_path / "s.zarr"
    assert main(["data", "screened", str(store), "--n", "4", "--L", "68"]) == 0
    capsys.readouterr()
    assert main(["train", "fields", "--data", str(store), "--field", "field", "--target",
                 "target", "--out", str(tmp_path / "m.onnx"), *extra]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
