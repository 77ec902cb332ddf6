"""An ASE calculator for atomistic EDNN models: total energies, and only energies.

EDNN models map a rasterized image of the atoms to a total energy; they give no
forces and no stress. :class:`EDNNCalculator` therefore implements ``energy``
(and ``free_energy``, the same number) through :func:`ednn_dask.atoms.energy`,
and asking for anything else raises :class:`EnergyOnlyError`, which subclasses
ASE's ``PropertyNotImplementedError`` so ASE code that catches that still works.

Sample thermal structures with Monte Carlo instead of molecular dynamics
(:class:`ednn_dask.mc.AtomsChain`), or take finite differences of the energy.

Needs ASE (``pip install 'ednn-dask[reference]'``); ``import ednn_dask`` does not
import this module.
"""

from __future__ import annotations

import os
from typing import Any

from ase.calculators.calculator import (
    Calculator,
    PropertyNotImplementedError,
    all_changes,
)

from ednn_dask.atoms.references import require_atomistic
from ednn_dask.atoms.structure import Structure
from ednn_dask.atoms.total_energy import energy, registry_offsets
from ednn_dask.errors import EDNNError
from ednn_dask.model import TileModel, load_model


class EnergyOnlyError(EDNNError, PropertyNotImplementedError):
    """A property other than the energy (forces, stress, ...) asked of an EDNN model."""


def _energy_only(name: str) -> EnergyOnlyError:
    return EnergyOnlyError(
        f"EDNNCalculator cannot give {name!r}: EDNN models are energy-only (total energy, "
        f"no forces and no stress). Sample with Monte Carlo (ednn_dask.mc.AtomsChain) "
        f"instead of molecular dynamics or relaxation, or take finite differences of the "
        f"energy yourself."
    )


class EDNNCalculator(Calculator):
    """ASE calculator giving the total energy (eV) of an atomistic EDNN model.

    Parameters
    ----------
    model : TileModel or path
        An atomistic model (its metadata has ``ednn.raster``), e.g.
        ``models/hexagonal-f16c24.onnx``. Field models (Ising, Laplacian) are refused.
    client : distributed.Client or scheduler address, optional
        Passed to :func:`ednn_dask.atoms.energy` for cells too large to score in process.
    chunks : int, optional
        Window side in pixels for the large-cell routes.
    check : bool
        Check the atoms first (no overlaps, elements known to the model).
    registries : int
        Average over this many registries of the cell on the model's grid, at that many
        times the cost (:func:`ednn_dask.atoms.energy`; 4 takes most of the registry
        noise of a small cell out).
    **kwargs
        Passed to ``ase.calculators.calculator.Calculator``.

    Notes
    -----
    Atoms are wrapped into the cell along the periodic axes before scoring
    (the energy of a periodic cell does not depend on it), so the positions that
    molecular dynamics or Monte Carlo carried out of the cell are accepted.
    Only ``energy`` and ``free_energy`` are implemented; forces, stress and every
    other property raise :class:`EnergyOnlyError`.

    Examples
    --------
    Score a 60-atom graphene cell::

        import numpy as np
        from ednn_dask.ase import EDNNCalculator
        from ednn_dask.atoms.materials import hexagonal_sheet

        atoms = hexagonal_sheet(np.random.default_rng(0), "graphene").to_ase()
        atoms.calc = EDNNCalculator("models/hexagonal-f16c24.onnx")
        atoms.get_potential_energy()  # eV, in the model's reference convention
        atoms.get_forces()            # raises EnergyOnlyError
    """

    implemented_properties = ["energy", "free_energy"]

    def __init__(
        self,
        model: TileModel | str | os.PathLike,
        *,
        client: Any = None,
        chunks: int | None = None,
        check: bool = True,
        registries: int = 1,
        **kwargs: Any,
    ) -> None:
        model = load_model(model)
        require_atomistic(model)
        registry_offsets(model, registries)  # refuse a bad count now, not at the first call
        self.model, self.client, self.chunks, self.check = model, client, chunks, check
        self.registries = registries
        super().__init__(**kwargs)

    def get_property(self, name: str, atoms: Any = None, allow_calculation: bool = True) -> Any:
        if name not in self.implemented_properties:
            raise _energy_only(name)
        return super().get_property(name, atoms, allow_calculation)

    def calculate(
        self,
        atoms: Any = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        properties = properties or ["energy"]
        missing = [p for p in properties if p not in self.implemented_properties]
        if missing:
            raise _energy_only(missing[0])
        super().calculate(atoms, properties, system_changes)
        structure = Structure.from_ase(self.atoms).wrapped()
        value = float(energy(structure, self.model, client=self.client, chunks=self.chunks,
                             check=self.check, registries=self.registries))
        self.results = {"energy": value, "free_energy": value}
