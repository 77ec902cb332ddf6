"""Wolff proposals corrected to the EDNN: exact sampling, consistent energies, Binder crossings."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from ednn_dask.errors import ConfigError
from ednn_dask.inference import contributions
from ednn_dask.mc import cluster
from ednn_dask.mc.binder import (
    Reweighting,
    Samples,
    crossing,
    crossing_with_error,
    jackknife,
    load_samples,
    run_chain,
)
from ednn_dask.mc.cluster import WolffChain, ising_wolff, periodic_bbox, wolff_chain

SHIPPED_2D = Path(__file__).resolve().parents[1] / "models" / "ising-2d-f1c1.onnx"


def _all_states(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Energy and magnetization per site of every state of the periodic side x side Ising model."""
    from training.ising import ising_energy

    n = side * side
    states = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.int8) * 2 - 1
    energies = ising_energy(states.reshape(-1, side, side), dim=2)
    return energies, states.mean(axis=1)


def _boltzmann(energies: np.ndarray, temperature: float) -> dict[float, float]:
    levels, counts = np.unique(energies, return_counts=True)
    weights = counts * np.exp(-(levels - levels.min()) / temperature)
    return dict(zip(levels.tolist(), (weights / weights.sum()).tolist(), strict=True))


def _chi_square_pvalue(sampled: np.ndarray, exact: dict[float, float]) -> float:
    from scipy.stats import chisquare

    levels = np.array(sorted(exact))
    assert set(np.unique(sampled)) <= set(levels)
    observed = np.array([(sampled == e).sum() for e in levels], float)
    expected = np.array([exact[e] for e in levels]) * len(sampled)
    keep = expected >= 5  # the rare levels pooled into one bin
    observed = np.append(observed[keep], observed[~keep].sum())
    expected = np.append(expected[keep], expected[~keep].sum())
    return float(chisquare(observed, expected).pvalue)


def test_with_the_exact_energy_the_cluster_chain_samples_boltzmann(exact_ising2d):
    """4x4 Ising, exact energy as the EDNN: every correction is accepted, and the visited
    energies follow the Boltzmann distribution of all 2^16 states (chi-square); the same
    samples against the distribution at another temperature fail the test."""
    temperature = 2.269
    run = wolff_chain(exact_ising2d[1], 4, temperature, 4500, thermalize=100, seed=3)
    assert run.acceptance == 1.0  # ΔE_model == ΔE_Ising exactly: min(1, exp(0))
    assert run.drift == 0.0  # integer energies: the running total is exact
    energies = np.rint(run.energy[::3] * 16)  # every third step: nearly independent
    all_energies, _ = _all_states(4)
    assert _chi_square_pvalue(energies, _boltzmann(all_energies, temperature)) > 1e-3
    assert _chi_square_pvalue(energies, _boltzmann(all_energies, 2.5)) < 1e-8


@pytest.mark.parametrize("ndim", [2, 3])
def test_exact_energy_changes_equal_the_ising_changes_on_both_pricing_paths(
        request, monkeypatch, ndim):
    """Priced on the bounding box (dense) or tile by tile, the exact EDNN's cluster energy
    change is the Ising one to the bit, and the running total stays the full rescoring."""
    model = request.getfixturevalue(f"exact_ising{ndim}d")[1]
    side = 8 if ndim == 2 else 5
    for cost, dense in ((0.0, True), (math.inf, False)):
        monkeypatch.setattr(cluster, "DENSE_COST", cost)
        spins = np.random.default_rng(ndim).choice(np.float32([-1, 1]), size=(side,) * ndim)
        chain = WolffChain(model, spins, 4.0 if ndim == 3 else 2.3, rng=ndim)
        for _ in range(150):
            step = chain.step()
            assert step.dense is dense and step.accepted
            assert step.delta == step.delta_ising
        assert chain.local.drift() == 0.0
        assert chain.magnetization_total == chain.local.field.sum()


@pytest.mark.parametrize("cost", [0.0, math.inf])
def test_a_cluster_step_prices_like_two_full_scorings(cnn3d, monkeypatch, cost):
    """A random 3-D CNN with focus 2: each accepted step's ΔE is the difference of the full
    energies; a rejected step leaves the field; contributions stay a full rescoring."""
    monkeypatch.setattr(cluster, "DENSE_COST", cost)
    model = cnn3d[1]
    spins = np.random.default_rng(0).choice(np.float32([-1, 1]), size=(6, 4, 8))
    chain = WolffChain(model, spins, 50.0, rng=1)
    seen = set()
    for _ in range(30):
        before = chain.local.field.copy()
        e0 = contributions(before, model).sum(dtype=np.float64)
        step = chain.step()
        seen.add(step.accepted)
        if step.accepted:
            e1 = contributions(chain.local.field, model).sum(dtype=np.float64)
            assert step.delta == pytest.approx(e1 - e0, abs=1e-4)
            assert np.count_nonzero(chain.local.field != before) == step.size
        else:
            np.testing.assert_array_equal(chain.local.field, before)
    full = contributions(chain.local.field, model)
    np.testing.assert_allclose(chain.local.contributions, full, rtol=1e-5, atol=1e-5)
    assert abs(chain.local.drift()) < 1e-4
    assert True in seen


def test_the_shipped_model_cluster_and_metropolis_chains_agree():
    """L = 16 at T = 2.269 with the shipped 2-D EDNN: <E>/N of the corrected Wolff chain and
    of single-spin Metropolis agree within 3 standard errors (blocking analysis); the
    correction accepts nearly everything and the running energy is a full rescoring."""
    from ednn_dask.mc import ising_chain

    wolff = wolff_chain(SHIPPED_2D, 16, 2.269, 2000, seed=1)
    metropolis = ising_chain(SHIPPED_2D, 16, 2.269, 1000, thermalize=150, seed=2)
    a, b = wolff.summary(), metropolis.summary()
    sem = math.hypot(a["energy_per_site_sem"], b["energy_per_site_sem"])
    assert abs(a["energy_per_site"] - b["energy_per_site"]) < 3 * sem, (a, b)
    assert sem < 0.03  # about 2 % of <E>/N = -1.45
    assert wolff.acceptance > 0.98
    assert abs(wolff.drift) < 1e-3


def test_the_shipped_model_running_energy_is_a_full_rescoring():
    from ednn_dask.model import load_model

    model = load_model(SHIPPED_2D)
    spins = np.random.default_rng(4).choice(np.float32([-1, 1]), size=(32, 32))
    chain = WolffChain(model, spins, 2.269, rng=4)
    chain.run(300)
    full = contributions(chain.local.field, model).sum(dtype=np.float64)
    assert chain.energy == pytest.approx(full, abs=1e-3)
    assert chain.magnetization_total == chain.local.field.sum()


def test_periodic_bounding_box():
    assert periodic_bbox(np.array([3, 4, 5]), 10) == (3, 3)
    assert periodic_bbox(np.array([9, 0, 1]), 10) == (9, 3)  # across the wrap
    assert periodic_bbox(np.array([0, 5]), 10) == (0, 6) or periodic_bbox(
        np.array([0, 5]), 10) == (5, 6)
    assert periodic_bbox(np.arange(10), 10) == (0, 10)


@pytest.mark.parametrize("shape, focus, context", [((7, 9), (1, 1), (1, 1)),
                                                    ((6, 4, 8), (2, 2, 2), (1, 1, 1)),
                                                    ((9, 12), (3, 2), (2, 0))])
def test_cluster_geometry_against_numpy(shape, focus, context):
    """The kernel's affected blocks and periodic bounding box against a direct computation."""
    rng = np.random.default_rng(0)
    grid = tuple(n // f for n, f in zip(shape, focus, strict=True))
    marks, occupied = np.zeros(math.prod(grid), bool), np.zeros((len(shape), max(shape)), bool)
    arrays = [np.array(v, np.int64) for v in (shape, focus, context, grid)]
    for size in (1, 3, 12, math.prod(shape) // 2, math.prod(shape)):
        sites = np.sort(rng.choice(math.prod(shape), size, replace=False))
        blocks, lo, box = cluster._geometry(sites, *arrays, marks, occupied)
        coords = np.unravel_index(sites, shape)
        expected = set()
        for p in zip(*coords, strict=True):
            ranges = [range(math.floor((x - c) / f), math.ceil((x + 1 + c) / f))
                      for x, f, c in zip(p, focus, context, strict=True)]
            for b in itertools.product(*ranges):
                expected.add(np.ravel_multi_index(tuple(np.mod(b, grid)), grid))
        assert blocks.tolist() == sorted(expected)
        assert [tuple(x) for x in zip(lo.tolist(), box.tolist(), strict=True)] == [
            periodic_bbox(c, n) for c, n in zip(coords, shape, strict=True)]
        assert not marks.any() and not occupied.any()


def test_plain_ising_wolff_orders_below_tc_and_disorders_above():
    spins = np.random.default_rng(0).choice(np.float32([-1, 1]), size=(16, 16))
    assert abs(ising_wolff(spins, 1.5, 50, rng=1).mean()) > 0.9
    assert abs(ising_wolff(np.ones((16, 16)), 6.0, 50, rng=1).mean()) < 0.5


def test_bad_inputs_are_refused(exact_ising2d):
    with pytest.raises(ConfigError, match="not a periodic one-channel lattice model"):
        WolffChain(SHIPPED_2D.with_name("porous-f32c16.onnx"), np.ones((32, 32)), 2.0)
    with pytest.raises(ConfigError, match="±1"):
        WolffChain(exact_ising2d[1], np.zeros((4, 4)), 2.0)
    with pytest.raises(ConfigError, match="temperature > 0"):
        WolffChain(exact_ising2d[1], np.ones((4, 4)), 0.0)


def test_a_saved_chain_continues_bit_for_bit(tmp_path):
    """Run in two calls (saving after every batch) or in one: the same samples and state."""
    whole = run_chain(SHIPPED_2D, 8, 2.3, 300, tmp_path / "whole", seed=1)
    run_chain(SHIPPED_2D, 8, 2.3, 130, tmp_path / "parts", seed=1, save_seconds=0)
    parts = run_chain(SHIPPED_2D, 8, 2.3, 300, tmp_path / "parts", seed=1)
    for name in ("energy", "magnetization", "size", "accepted"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(parts, name))
    with np.load(tmp_path / "whole" / "chain.npz") as a, \
            np.load(tmp_path / "parts" / "chain.npz") as b:
        assert set(a.files) == set(b.files)
        for name in a.files:
            if name != "seconds":
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    loaded = load_samples(tmp_path / "parts")
    np.testing.assert_array_equal(loaded.energy, parts.energy)
    again = run_chain(SHIPPED_2D, 8, 2.3, 200, tmp_path / "parts", seed=1)  # only loads
    np.testing.assert_array_equal(again.energy, parts.energy[:200])
    with pytest.raises(ConfigError, match="holds the chain"):
        run_chain(SHIPPED_2D, 8, 2.4, 300, tmp_path / "parts", seed=1)


def _exact_moments(temperature: float) -> dict[str, float]:
    energies, m = _all_states(4)
    w = np.exp(-(energies - energies.min()) / temperature)
    w /= w.sum()
    m2, m4 = w @ m**2, w @ m**4
    return {"abs_magnetization": float(w @ np.abs(m)), "binder": float(1 - m4 / (3 * m2**2)),
            "energy_per_site": float(w @ energies / 16)}


def _samples(model, temperature, steps, seed) -> Samples:
    run = wolff_chain(model, 4, temperature, steps, thermalize=100, seed=seed)
    return Samples(4, 2, temperature, run.energy * 16, run.magnetization,
                   np.ones(steps, np.int64), np.ones(steps, bool), run.seconds)


def test_reweighting_matches_exact_enumeration(exact_ising2d):
    """4x4 Ising: single-histogram reweighting from T0 = 2.5 and multiple histograms from
    2.2 and 2.8 give <|m|>, U and <E>/N of every 2^16 states within 4 jackknife errors."""
    model = exact_ising2d[1]
    single = Reweighting([_samples(model, 2.5, 5000, 1)])
    multiple = Reweighting([_samples(model, 2.2, 3000, 2), _samples(model, 2.8, 3000, 3)])
    for r, temperatures in ((single, [2.3, 2.5, 2.7]), (multiple, [2.2, 2.5, 2.8])):
        full = r.moments(temperatures)
        leave = [r.moments(temperatures, leave_out=j) for j in range(r.blocks)]
        for key in ("abs_magnetization", "binder", "energy_per_site"):
            for k, t in enumerate(temperatures):
                estimate, error = jackknife(np.array([x[key][k] for x in leave]), full[key][k])
                exact = _exact_moments(t)[key]
                assert abs(full[key][k] - exact) < 4 * error + 1e-9, (key, t, full[key][k],
                                                                       exact, error)
                assert error < 0.04


class _Linear:
    """A stand-in for Reweighting: a linear Binder cumulant of slope ``-slope``."""

    def __init__(self, side, slope):
        self.side, self.slope = side, slope

    def moments(self, t, leave_out=None):
        return {"binder": 0.6 - self.slope * (np.asarray(t) - 2.3)}

    def binder(self, t, leave_out=None):
        return float(self.moments(t)["binder"])


def test_crossing_finds_the_sign_change_from_below():
    assert crossing(_Linear(16, 1.0), _Linear(32, 2.0), 2.0, 2.6) == pytest.approx(2.3)
    assert crossing(_Linear(32, 2.0), _Linear(16, 1.0), 2.0, 2.6) == pytest.approx(2.3)
    assert math.isnan(crossing(_Linear(16, 2.0), _Linear(32, 1.0), 2.0, 2.6))  # wrong way
    assert math.isnan(crossing(_Linear(16, 1.0), _Linear(32, 2.0), 2.4, 2.6))  # outside


@pytest.mark.slow
def test_the_shipped_2d_model_binder_crossing_is_near_onsager(tmp_path):
    """L = 16, 32 at T0 = 2.269: the crossing of the Binder cumulants of the shipped 2-D EDNN
    lies within 1 % of Onsager's T_c (about two minutes)."""
    from ednn_dask.mc.binder import TC_2D

    chains = [Reweighting([run_chain(SHIPPED_2D, side, 2.269, steps, tmp_path / str(side))])
              for side, steps in ((16, 40000), (32, 30000))]
    result = crossing_with_error(*chains)
    assert abs(result["tc"] - TC_2D) / TC_2D < 0.01, result
    assert result["tc_error"] < 0.01
