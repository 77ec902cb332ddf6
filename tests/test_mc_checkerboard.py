"""Batched checkerboard rounds of atom moves: each move priced as if alone, moves independent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ednn_dask.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "hexagonal-f16c24.onnx"
FEW = settings(max_examples=4, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def shipped():
    from ednn_dask.model import load_model

    return load_model(SHIPPED)


def _chain(model, seed: int, k: int = 3, step: float = 0.05):
    """A graphene sheet of (5k, 3k) cells: k = 3 (540 atoms, 192 px) gives 2 x 2 cells of
    96 px with the shipped model; k = 2 (256 px) with the test model's focus of 32 px."""
    from ednn_dask.atoms import hexagonal_sheet
    from ednn_dask.mc import AtomsChain

    sheet = hexagonal_sheet(np.random.default_rng(seed), "graphene", cells=(5 * k, 3 * k),
                            displacement=0.05)
    return AtomsChain(sheet, model, 1000.0, step=step, seed=seed)


def _tolerance(proposal) -> float:
    """float32 rounding of the affected blocks' contributions."""
    return 1e-6 * float(np.abs(proposal.contributions).sum()) + 1e-6


def _board(request, name, seed):
    from ednn_dask.mc.checkerboard import Checkerboard

    if name == "shipped":
        model, k = request.getfixturevalue("shipped"), 3
    else:
        model, k = request.getfixturevalue("atomistic")[1], 2
    chain = _chain(model, seed, k)
    board = Checkerboard(chain)
    assert min(board.geometry.cells) >= 2
    return chain, board


@pytest.mark.parametrize("name", ["shipped", "atomistic"])
@FEW
@given(seed=st.integers(0, 1000), data=st.data())
def test_a_batched_move_costs_what_it_costs_alone(request, name, seed, data):
    chain, board = _board(request, name, seed)
    g = board.geometry
    shift = tuple(data.draw(st.integers(0, d // f - 1)) * f
                  for d, f in zip(g.side, board.focus, strict=True))
    batch = board.propose_round(shift)
    assert batch.shift == shift
    assert len(batch.atoms) == g.cells[0] * g.cells[1]  # every cell has interior atoms
    shapes = {p.change.values.shape for p in batch.proposals if p is not None}
    assert len(shapes) <= 1  # one window shape: one onnxruntime call
    for atom, d, p in zip(batch.atoms, batch.displacements, batch.proposals, strict=True):
        if p is not None:
            alone = chain.propose_move(int(atom), d)
            assert p.delta == pytest.approx(alone.delta, abs=_tolerance(alone))


@FEW
@given(seed=st.integers(0, 1000))
def test_accepted_moves_commit_as_if_one_after_the_other(shipped, seed):
    """Every move of a round committed at once equals each priced afresh and committed in turn."""
    chain, twin = _chain(shipped, seed), _chain(shipped, seed)
    from ednn_dask.mc.checkerboard import Checkerboard

    board = Checkerboard(chain)
    for _ in range(2):
        batch = board.propose_round()
        board.commit(batch, np.ones(len(batch.atoms), bool))
        for atom, d, p, ok in zip(batch.atoms, batch.displacements, batch.proposals,
                                  batch.accepted, strict=True):
            if ok:
                fresh = twin.propose_move(int(atom), d)  # against the moves committed so far
                assert fresh.delta == pytest.approx(p.delta, abs=_tolerance(fresh))
                twin.accept_move(int(atom), d, fresh)
        np.testing.assert_allclose(chain.xy, twin.xy, rtol=0, atol=1e-12)
        np.testing.assert_allclose(chain.local.field, twin.local.field, rtol=0, atol=1e-5)
        np.testing.assert_allclose(chain.local.contributions, twin.local.contributions,
                                   rtol=1e-5, atol=1e-5)
        assert chain.energy == pytest.approx(twin.energy, abs=1e-4)
    assert batch.accepted.any()


@FEW
@given(seed=st.integers(0, 1000))
def test_only_interior_atoms_move_and_the_interiors_keep_their_atoms(shipped, seed):
    from ednn_dask.mc.checkerboard import Checkerboard

    chain = _chain(shipped, seed, step=0.4)  # large steps: some moves leave the interior
    board = Checkerboard(chain)
    left = rounds = 0
    while rounds < 5 or (left == 0 and rounds < 60):  # until some move has left an interior
        rounds += 1
        before = chain.xy.copy()
        batch = board.round()
        interior, cell = board.interior(batch.shift)
        np.testing.assert_array_equal(interior, batch.interior)  # no atom entered or left
        moved = np.flatnonzero(np.any(chain.xy != before, axis=1))
        assert set(moved) == set(batch.atoms[batch.accepted].tolist())
        assert interior[moved].all() and batch.interior[batch.atoms].all()
        assert len(set(cell[batch.atoms].tolist())) == len(batch.atoms)  # one per cell
        assert not batch.accepted[~batch.inside].any()
        left += int((~batch.inside).sum())
    assert left > 0


def test_rounds_keep_the_running_energy(shipped):
    from ednn_dask import energy
    from ednn_dask.mc.checkerboard import Checkerboard, moves_per_second

    chain = _chain(shipped, 7)
    board = Checkerboard(chain)
    run = board.sweep(0.25)
    assert run.moves >= 0.25 * len(chain.numbers) and run.rounds * 4 == run.moves
    assert 0 < run.acceptance <= 1 and run.moves_per_second > 0
    assert board.total.moves == run.moves
    assert moves_per_second(board, 8, warmup=4) > 0
    assert abs(chain.local.drift()) < 1e-3
    assert chain.energy == pytest.approx(energy(chain.structure(), shipped, check=False),
                                         abs=2e-3)


def test_a_sheet_too_small_for_two_cells_per_axis_is_refused(shipped):
    from ednn_dask.mc.checkerboard import Checkerboard

    with pytest.raises(ConfigError, match="AtomsChain.attempt"):
        Checkerboard(_chain(shipped, 0, k=1))  # the 60-atom cell
    chain = _chain(shipped, 0)
    with pytest.raises(ConfigError, match="got side 64"):
        Checkerboard(chain, side=64)  # divides 192 but leaves no interior
    with pytest.raises(ConfigError, match="got side 100"):
        Checkerboard(chain, side=(96, 100))
    assert Checkerboard(chain, side=96).geometry.cells == (2, 2)
    board = Checkerboard(chain)
    chain.step = 2.0  # the margins grow with the step: refused at the next round
    with pytest.raises(ConfigError, match="step 2"):
        board.round()


def test_a_round_whose_moves_would_share_blocks_is_refused(shipped):
    """The disjointness check fires when the interiors reach the cell edges (margins 0)."""
    import dataclasses

    from ednn_dask.mc.checkerboard import Checkerboard

    chain = _chain(shipped, 3)
    board = Checkerboard(chain)
    step = float(chain.step)
    board._geometry[step] = dataclasses.replace(board.geometry, margin_lo=(0, 0),
                                                margin_hi=(0, 0))
    with pytest.raises(RuntimeError, match="same focus block"):
        for _ in range(30):
            board.round()
