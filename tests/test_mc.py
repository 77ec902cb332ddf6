"""Monte Carlo on EDNNs: local energy differences equal full rescoring; Metropolis samples Boltzmann."""

from __future__ import annotations

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


@pytest.mark.parametrize("name", ["exact_ising2d", "cnn2d", "cnn2d_mean", "cnn3d"])
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
