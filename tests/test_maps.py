"""Contribution maps on disk and in pictures (ednn_dask.maps, `ednn-dask score --out`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from ednn_dask import make_field, save_field, score
from ednn_dask.cli import main
from ednn_dask.maps import _at_most
from tests.helpers import ising_energy_np
from tests.test_bad_inputs import one_line


@pytest.mark.parametrize("ndim", [2, 3])
def test_score_out_writes_the_map_its_picture_and_the_result(ndim, exact_ising2d,
                                                             exact_ising3d, tmp_path, capsys):
    model = (exact_ising2d if ndim == 2 else exact_ising3d)[1]
    spins = np.random.default_rng(ndim).choice(np.array([-1, 1], np.int8), (24,) * ndim)
    field = save_field(make_field(spins, name="spins"), tmp_path / "f.zarr")
    out = tmp_path / "out"
    assert main(["score", str(field), "--model", str(model.path), "--out", str(out),
                 "--chunks", "8", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    written = json.loads((out / "result.json").read_text())
    expected = score(field, model, chunks=8)
    assert written["energy"] == printed["energy"] == expected.energy == ising_energy_np(spins)
    stored = xr.open_zarr(out / "contributions.zarr", zarr_format=3, consolidated=False)
    xr.testing.assert_identical(stored["contribution"].load(), expected.contributions)
    png = (out / "contributions.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 2 * height if ndim == 3 else width < 2 * height  # three slices side by side

    assert main(["score", str(field), "--model", str(model.path), "--out", str(out)]) == 2
    one_line(capsys.readouterr().err, "score", "exists already", "--overwrite")
    assert main(["score", str(field), str(field), "--model", str(model.path),
                 "--out", str(tmp_path / "two")]) == 2
    one_line(capsys.readouterr().err, "score", "one field")
    assert not (tmp_path / "two").exists()


def test_a_large_map_is_drawn_as_sums_over_blocks():
    values = np.arange(2500 * 7, dtype=np.float64).reshape(2500, 7)
    c = xr.DataArray(values, dims=("y", "x"))
    small, factor = _at_most(c, 1024)
    assert factor == 3 and small.shape == (834, 3)
    assert float(small.sum()) == float(values.sum())  # every region's energy kept
    assert _at_most(c, 4096)[1] == 1
