"""What an atomistic model says about atoms: its elements, their reference energies,
and the temperatures it was trained at.

An atomistic model's metadata (``ednn.raster``, ``ednn.reference_energies``)
names the elements it knows and the per-element energies subtracted before
training; :func:`reference_sum` adds them back, so predictions are total
energies in the reference method's convention (eV). Its card's
``temperatures_K`` says which thermal structures it saw (:func:`warn_if_extrapolating`);
atoms closer than any reference structure brings them are extrapolation too
(:func:`warn_if_too_close`).
"""

from __future__ import annotations

import warnings
from typing import Any

from ednn_dask.atoms.structure import ELEMENTS, SYMBOLS
from ednn_dask.errors import ExtrapolationWarning, ModelFormatError

# Cold training cells hold independent displacements; from room temperature up, MD
# moves neighbours together and reconstructs vacancies, which such a model never saw.
COLD_UP_TO_K = 300.0

# GFN1-xTB MD of our C/B/N cells (1,980 snapshots of hexagonal and porous cells at
# 300-1,500 K in data/) never brings two atoms closer than 1.13 Å. Monte Carlo that gets
# below this has found a hole in the model: no repulsion it was trained on, energies
# hundreds of meV/atom too low there (the findings page, by closest pair).
CLOSEST_PAIR_A = 1.1


def require_atomistic(model: Any) -> None:
    """Refuse a model that scores fields, not atoms (no ``ednn.raster`` metadata)."""
    spec = model.spec
    if spec.raster is None or spec.spacing is None:
        raise ModelFormatError(
            f"model {model.name!r} has no ednn.raster metadata: it scores fields, not atoms; "
            f"rasterize the atoms yourself and score the field (ednn-dask score)."
        )


def warn_if_extrapolating(model: Any, temperature: float) -> None:
    """Warn (:class:`ExtrapolationWarning`) when ``temperature`` is outside the model's training.

    The card's ``temperatures_K`` is ``[low, high]`` for models trained on thermal
    structures (below ``low`` is covered where cold lattices were mixed in, as
    ``cold_lattices_too`` says) and ``"cold"``, or absent, for cold lattices only,
    which cover up to :data:`COLD_UP_TO_K`. Only models of our atomistic recipes
    (``system`` in the card) are checked: a model from elsewhere does not say.
    """
    provenance = model.spec.provenance or {}
    if model.spec.raster is None or not provenance.get("system"):
        return
    trained = provenance.get("temperatures_K", "cold")
    if trained == "cold":
        low, high, what = 0.0, COLD_UP_TO_K, "cold lattices only"
    else:
        low, high = trained
        low = 0.0 if provenance.get("cold_lattices_too") else low
        what = f"structures at {trained[0]:g}-{high:g} K"
    if low <= temperature <= high:
        return
    warnings.warn(
        f"{model.name} was trained on {what} (its card's temperatures_K): at {temperature:g} K "
        f"it extrapolates, and its energies may be far off; use a model whose card covers "
        f"{temperature:g} K (the findings page compares the shipped ones).",
        ExtrapolationWarning, stacklevel=3)


def warn_if_too_close(model: Any, closest: float, temperature: float, *,
                      of: tuple[int, int] | None = None) -> None:
    """Warn (:class:`ExtrapolationWarning`) when a chain of a model of our atomistic recipes
    brought two atoms closer than :data:`CLOSEST_PAIR_A` in a measured frame.

    ``of``: ``(k, n)`` when ``k`` of ``n`` chains did; ``closest`` and ``temperature``
    are then those of the chain that came closest.
    """
    provenance = model.spec.provenance or {}
    if model.spec.raster is None or not provenance.get("system") or closest >= CLOSEST_PAIR_A:
        return
    chains = (f"the chain of {model.name} at {temperature:g} K" if of is None else
              f"{of[0]} of {of[1]} chains of {model.name} (the closest at {temperature:g} K)")
    warnings.warn(
        f"{chains} brought two atoms {closest:.2f} Å "
        f"apart, closer than {CLOSEST_PAIR_A:g} Å, which GFN1-xTB MD of C/B/N sheets does not "
        f"reach even at 1500 K: the model extrapolates there, its energies are likely far "
        f"too low and the frames unphysical; do not use them as thermal samples.",
        ExtrapolationWarning, stacklevel=3)


def model_elements(spec: Any) -> list[int]:
    """Atomic numbers the model knows: its channels' species, else its reference energies."""
    if spec.raster["species"]:
        return [int(z) for z in spec.raster["species"]]
    if spec.reference_energies:
        return [SYMBOLS[s] for s in spec.reference_energies]
    raise ModelFormatError("the model names no elements: atomistic models list them in "
                           "ednn.raster.species or ednn.reference_energies.")


def reference_sum(counts: dict[int, int], reference: dict[str, float] | None) -> float:
    """Σ_s n_s μ_s over the elements present; an element without a reference is an error."""
    if not reference:
        return 0.0
    total = 0.0
    for z, n in counts.items():
        symbol = ELEMENTS.get(z, str(z))
        if symbol not in reference:
            raise ModelFormatError(
                f"the model has no reference energy for {symbol}; it knows "
                f"{sorted(reference)}. Use a model trained on {symbol}."
            )
        total += n * reference[symbol]
    return total
