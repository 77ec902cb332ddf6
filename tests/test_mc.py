"""Monte Carlo on EDNNs: local energy changes equal full rescoring; Metropolis samples Boltzmann."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ednn_dask.errors import GeometryError
from ednn_dask.inference import contributions
from ednn_dask.mc import Change, LocalEnergy

FIXTURE_CHECK = settings(max_examples=40, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture])


def _full(field, model, boundary=None) -> np.ndarray:
    return contributions(field, model, boundary=boundary).astype(np.float64)


@pytest.mark.parametrize("name", ["exact_ising2d", "cnn2d", "cnn2d_mean", "cnn3d", "multiscale2d"])
@FIXTURE_CHECK
@given(data=st.data())
def test_local_energy_difference_is_the_difference_of_full_scorings(request, name, data):
    model = request.getfixturevalue(name)[1]
    spec = model.spec
    blocks = data.draw(st.tuples(*[st.integers(1, 4)] * spec.ndim))
    shape = tuple(b * f for b, f in zip(blocks, spec.focus, strict=True))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    field = rng.normal(size=(spec.channels, *shape)).astype(np.float32)
    periodic = spec.boundary == "periodic"
    box = tuple(data.draw(st.integers(1, min(3, n))) for n in shape)
    lo = tuple(data.draw(st.integers(-n if periodic else 0, (n - 1) if periodic else n - b))
               for n, b in zip(shape, box, strict=True))  # periodic: across the wrap too
    values = rng.normal(size=(spec.channels, *box)).astype(np.float32)
    local = LocalEnergy(field, model)
    (proposal,) = local.propose([Change(lo, values)])
    after = field.copy()
    index = [np.arange(low, low + b) % n for low, b, n in zip(lo, box, shape, strict=True)]
    after[np.ix_(np.arange(spec.channels), *index)] = values
    old, new = _full(field, model), _full(after, model)
    scale = np.abs(old).sum() + np.abs(new).sum()
    assert proposal.delta == pytest.approx(new.sum() - old.sum(), abs=1e-6 * scale + 1e-6)
    assert local.energy == old.sum()  # nothing changes before accept
    local.accept(proposal)
    np.testing.assert_allclose(local.contributions, new, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(local.field, after)
    assert local.drift() == pytest.approx(0, abs=1e-6 * scale + 1e-6)


def test_a_batch_prices_each_change_alone(exact_ising2d):
    """Changes priced together in one onnxruntime call equal changes priced one by one."""
    model = exact_ising2d[1]
    spins = np.random.default_rng(3).choice(np.float32([-1, 1]), size=(12, 12))
    local = LocalEnergy(spins, model)
    changes = [Change((i, j), -spins[i:i + 1, j:j + 1]) for i in range(0, 12, 5)
               for j in range(0, 12, 3)]
    batch = [p.delta for p in local.propose(changes)]
    alone = [local.propose([c])[0].delta for c in changes]
    assert batch == alone
    # the exact Ising model: flipping s costs 2 s (sum of its 4 neighbours)
    for change, delta in zip(changes, batch, strict=True):
        i, j = change.lo
        s = spins[i, j]
        around = spins[(i + 1) % 12, j] + spins[i - 1, j] + spins[i, (j + 1) % 12] + spins[i, j - 1]
        assert delta == 2 * s * around


def test_changes_outside_a_constant_boundary_field_are_refused(cnn2d):
    model = cnn2d[1]
    local = LocalEnergy(np.zeros((2, 8, 4), np.float32), model)
    with pytest.raises(GeometryError, match="must lie inside"):
        local.propose([Change((7, 0), np.ones((2, 2, 1), np.float32))])


@pytest.mark.parametrize("name", ["exact_ising2d", "cnn2d_mean", "cnn3d"])
@FIXTURE_CHECK
@given(data=st.data())
def test_a_colour_class_of_sites_prices_and_commits_like_single_changes(request, name, data):
    model = request.getfixturevalue(name)[1]
    spec = model.spec
    spacing = [f * -(-(f + 2 * c) // f) for f, c in zip(spec.focus, spec.context, strict=True)]
    repeats = data.draw(st.tuples(*[st.integers(1, 3)] * spec.ndim))
    shape = tuple(s * r for s, r in zip(spacing, repeats, strict=True))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    field = rng.normal(size=(spec.channels, *shape)).astype(np.float32)
    offset = [data.draw(st.integers(0, s - 1)) for s in spacing]
    grids = np.meshgrid(*[np.arange(o, n, s) for o, n, s in zip(offset, shape, spacing,
                                                                 strict=True)], indexing="ij")
    sites = np.stack([g.ravel() for g in grids], axis=1)
    values = rng.normal(size=(len(sites), spec.channels)).astype(np.float32)
    local = LocalEnergy(field, model)
    delta = local.propose_sites(sites, values)
    single = [local.propose([Change(tuple(p), v.reshape(-1, *(1,) * spec.ndim))])[0].delta
              for p, v in zip(sites, values, strict=True)]
    np.testing.assert_allclose(delta, single, rtol=1e-6, atol=1e-6)
    accepted = rng.random(len(sites)) < 0.5
    local.accept_sites(accepted)
    after = field.copy()
    after[(slice(None), *sites[accepted].T)] = values[accepted].T
    full = _full(after, model)
    np.testing.assert_allclose(local.contributions, full, rtol=1e-5, atol=1e-5)
    assert local.drift() == pytest.approx(0, abs=1e-5 * np.abs(full).sum() + 1e-5)


def _exact_energy_distribution(side: int, temperature: float) -> dict[float, float]:
    """P(E) of the periodic side x side Ising model, all 2^(side^2) states enumerated."""
    from training.ising import ising_energy

    n = side * side
    states = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.int8) * 2 - 1
    energies = ising_energy(states.reshape(-1, side, side), dim=2)
    levels, counts = np.unique(energies, return_counts=True)
    weights = counts * np.exp(-(levels - levels.min()) / temperature)
    return dict(zip(levels.tolist(), (weights / weights.sum()).tolist(), strict=True))


def test_metropolis_with_the_exact_energy_samples_the_boltzmann_distribution(exact_ising2d):
    """4x4 Ising, exact energy in the same engine: the visited-energy histogram against
    the exact Boltzmann distribution of all 2^16 states (chi-square)."""
    from scipy.stats import chisquare

    from ednn_dask.mc import ising_chain

    temperature = 2.5
    run = ising_chain(exact_ising2d[1], 4, temperature, 3000, thermalize=100, seed=11)
    energies = np.rint(run.energy[::2] * 16)  # every other sweep: nearly independent at T=2.5
    exact = _exact_energy_distribution(4, temperature)
    levels = np.array(sorted(exact))
    assert set(np.unique(energies)) <= set(levels)
    observed = np.array([(energies == e).sum() for e in levels], float)
    expected = np.array([exact[e] for e in levels]) * len(energies)
    keep = expected >= 5  # the rare levels are pooled into one bin
    observed = np.append(observed[keep], observed[~keep].sum())
    expected = np.append(expected[keep], expected[~keep].sum())
    assert chisquare(observed, expected).pvalue > 1e-3
    assert run.drift == 0.0  # integer energies: the running total is exact


@pytest.mark.slow
def test_the_shipped_ising_model_samples_like_the_exact_energy(exact_ising2d):
    """L = 16, T = 2.5: <E>/N and <|m|> of the shipped 2-D EDNN and of the exact energy
    agree within 3 standard errors (blocking analysis)."""
    from pathlib import Path

    from ednn_dask.mc import ising_chain

    shipped = Path(__file__).resolve().parents[1] / "models" / "ising-2d-f1c1.onnx"
    a = ising_chain(shipped, 16, 2.5, 1000, seed=5).summary()
    b = ising_chain(exact_ising2d[1], 16, 2.5, 1000, seed=6).summary()
    for key in ("energy_per_site", "abs_magnetization"):
        sem = np.hypot(a[f"{key}_sem"], b[f"{key}_sem"])
        assert abs(a[key] - b[key]) < 3 * sem, (key, a[key], b[key], sem)
    assert abs(a["energy_drift"]) < 1e-3


def test_mc_command_prints_one_summary_per_temperature(capsys):
    import json
    from pathlib import Path

    from ednn_dask.cli import main

    model = Path(__file__).resolve().parents[1] / "models" / "ising-2d-f1c1.onnx"
    assert main(["mc", "ising", "--model", str(model), "--L", "8", "--T", "1.5,4",
                 "--sweeps", "200", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["temperature"] for r in rows] == [1.5, 4.0]
    for key in ("energy_per_site", "energy_per_site_sem", "abs_magnetization", "acceptance",
                "moves_per_second"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert rows[0]["abs_magnetization"] > 0.9 > 0.5 > rows[1]["abs_magnetization"]
    porous = model.with_name("porous-f32c16.onnx")
    assert main(["mc", "ising", "--model", str(porous), "--T", "2", "--sweeps", "5"]) == 2
    assert "not a periodic one-channel lattice model" in capsys.readouterr().err


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(atom=st.integers(0, 59), dx=st.floats(-0.3, 0.3), dy=st.floats(-0.3, 0.3),
       seed=st.integers(0, 100))
def test_an_atom_move_costs_the_difference_of_two_full_energies(atomistic, atom, dx, dy, seed):
    """The stamp moved on the field prices a move as energy() of the two structures does."""
    from ednn_dask import energy
    from ednn_dask.atoms import hexagonal_sheet
    from ednn_dask.mc import AtomsChain

    model = atomistic[1]
    cell = hexagonal_sheet(np.random.default_rng(seed), "hetero", displacement=0.05)
    chain = AtomsChain(cell, model, 1000.0)
    assert chain.energy == pytest.approx(energy(cell, model), abs=1e-4)
    move = np.array([dx, dy])
    proposal = chain.propose_move(atom, move)
    moved = cell.positions.copy()
    moved[atom, :2] += move
    after = type(cell)(moved, cell.numbers, cell.cell, cell.pbc).wrapped()
    assert proposal.delta == pytest.approx(energy(after, model, check=False)
                                           - energy(cell, model), abs=2e-4)
    chain.accept_move(atom, move, proposal)
    assert chain.energy == pytest.approx(energy(after, model, check=False), abs=2e-4)


def test_an_atoms_chain_keeps_its_running_energy(atomistic):
    from ednn_dask import energy
    from ednn_dask.atoms import hexagonal_sheet
    from ednn_dask.mc import AtomsChain

    model = atomistic[1]
    cell = hexagonal_sheet(np.random.default_rng(1), "graphene")
    chain = AtomsChain(cell, model, 1000.0, step=0.05, seed=3)
    run = chain.run(200, equilibrate=200)
    assert 0 < run.acceptance <= 1 and len(run.energy) == 200
    # the untrained model barely changes with a move, so every window of the equilibration
    # accepts more than the target: the step grew four times (200 / 50), then stayed fixed
    assert run.step == pytest.approx(0.05 * 1.1**4)
    assert abs(run.drift) < 1e-3
    assert chain.energy == pytest.approx(energy(chain.structure(), model, check=False),
                                         abs=2e-3)
    s = run.summary()
    assert s["moves_per_second"] > 0 and np.isfinite(s["energy_sem"])


def test_a_hard_core_keeps_atoms_apart_and_only_rejects(atomistic):
    """With min_distance, no accepted move brings two atoms closer than it; a chain whose
    hard core no move touches makes exactly the moves of a chain without one."""
    from ednn_dask.atoms import hexagonal_sheet
    from ednn_dask.errors import ConfigError
    from ednn_dask.mc import AtomsChain

    model = atomistic[1]
    cell = hexagonal_sheet(np.random.default_rng(2), "graphene")
    core = AtomsChain(cell, model, 20000.0, step=0.6, seed=4, min_distance=1.3)
    for _ in range(400):
        core.attempt()
    d = core.xy[:, None] - core.xy[None]
    d -= np.round(d / core.cell) * core.cell
    r = np.hypot(d[..., 0], d[..., 1]) + np.eye(len(d)) * 99
    assert r.min() >= 1.3
    # the hard core at 1.3 Å rejected moves a free chain took: it sampled another path
    free = AtomsChain(cell, model, 20000.0, step=0.6, seed=4)
    for _ in range(400):
        free.attempt()
    assert not np.array_equal(free.xy, core.xy)
    # far below every distance reached, the hard core changes nothing, bit for bit
    loose = AtomsChain(cell, model, 20000.0, step=0.6, seed=4, min_distance=0.01)
    for _ in range(400):
        loose.attempt()
    np.testing.assert_array_equal(loose.xy, free.xy)
    with pytest.raises(ConfigError, match="min_distance"):
        AtomsChain(cell, model, 1000.0, min_distance=0.0)


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [1.5, 2.0, 2.269, 2.5, 3.5])
def test_the_shipped_ising_model_matches_the_exact_energy_at_l32(exact_ising2d, temperature):
    """L = 32: <E>/N, <|m|> and the specific heat of the shipped 2-D EDNN and of the exact
    energy agree within 3 standard errors (blocking analysis; C/N from blocked E^2)."""
    from pathlib import Path

    from ednn_dask.mc import blocked_mean, ising_chain

    shipped = Path(__file__).resolve().parents[1] / "models" / "ising-2d-f1c1.onnx"
    runs = [ising_chain(m, 32, temperature, 4000, thermalize=1000, seed=s)
            for m, s in ((shipped, 21), (exact_ising2d[1], 22))]
    for name, series in (("energy", lambda r: r.energy),
                         ("|m|", lambda r: np.abs(r.magnetization)),
                         ("e^2", lambda r: r.energy**2)):
        (a, sa), (b, sb) = (blocked_mean(series(r)) for r in runs)
        assert abs(a - b) < 3 * np.hypot(sa, sb), (name, temperature, a, b, np.hypot(sa, sb))


MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.mark.parametrize("name, temperature, warned", [
    ("hexagonal-f16c24.onnx", 300.0, False),  # cold lattices stand for room temperature
    ("hexagonal-f16c24.onnx", 1000.0, True),
    ("hexagonal-thermal-f16c24.onnx", 1500.0, False),
    ("hexagonal-thermal-f16c24.onnx", 50.0, False),  # its cold lattices cover it
    ("hexagonal-thermal-f16c24.onnx", 2000.0, True),
    ("porous-thermal-f32c32.onnx", 1600.0, True),
])
def test_a_chain_outside_its_models_temperatures_is_warned(name, temperature, warned):
    import warnings

    from ednn_dask.atoms import hexagonal_sheet
    from ednn_dask.errors import ExtrapolationWarning
    from ednn_dask.mc import AtomsChain

    cell = hexagonal_sheet(np.random.default_rng(0), "graphene")  # carbon: every model's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ExtrapolationWarning)
        AtomsChain(cell, MODELS / name, temperature)
    said = [str(w.message) for w in caught if w.category is ExtrapolationWarning]
    assert len(said) == warned
    if warned:
        assert said[0].startswith(f"{name} was trained on ")
        assert f"at {temperature:g} K it extrapolates" in said[0]


def test_a_model_without_a_recipe_card_is_not_warned_about(atomistic):
    import warnings

    from ednn_dask.atoms import hexagonal_sheet
    from ednn_dask.errors import ExtrapolationWarning
    from ednn_dask.mc import AtomsChain

    cell = hexagonal_sheet(np.random.default_rng(0), "graphene")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExtrapolationWarning)
        AtomsChain(cell, atomistic[1], 20000.0)  # a card that names no system says nothing


def test_mc_atoms_says_it_extrapolates_in_one_line(tmp_path, capsys):
    import warnings

    from ednn_dask.atoms import hexagonal_sheet
    from ednn_dask.cli import main
    from ednn_dask.errors import ExtrapolationWarning

    structure = tmp_path / "graphene.extxyz"
    hexagonal_sheet(np.random.default_rng(0), "graphene").to_ase().write(structure)
    with warnings.catch_warnings():
        warnings.simplefilter("default", ExtrapolationWarning)
        assert main(["mc", "atoms", "--model", str(MODELS / "hexagonal-f16c24.onnx"),
                     "--structure", str(structure), "--T", "1000", "--steps", "20",
                     "--every", "10", "--json"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("ednn-dask mc: warning: hexagonal-f16c24.onnx was trained on "
                             "cold lattices only (its card's temperatures_K): at 1000 K")
