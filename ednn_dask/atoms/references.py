"""What an atomistic model says about atoms: its elements and their reference energies.

An atomistic model's metadata (``ednn.raster``, ``ednn.reference_energies``)
names the elements it knows and the per-element energies subtracted before
training; :func:`reference_sum` adds them back, so predictions are total
energies in the reference method's convention (eV).
"""

from __future__ import annotations

from typing import Any

from ednn_dask.atoms.structure import ELEMENTS, SYMBOLS
from ednn_dask.errors import ModelFormatError


def require_atomistic(model: Any) -> None:
    """Refuse a model that scores fields, not atoms (no ``ednn.raster`` metadata)."""
    spec = model.spec
    if spec.raster is None or spec.spacing is None:
        raise ModelFormatError(
            f"model {model.name!r} has no ednn.raster metadata: it scores fields, not atoms; "
            f"rasterize the atoms yourself and score the field (ednn-dask score)."
        )


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
