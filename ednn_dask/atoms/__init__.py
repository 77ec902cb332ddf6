"""Atoms: structures and sources, material generators, rasterization, energies.

Layers, each importing only those above it::

    structure   Structure, the atom-source protocol (as_source)
    materials   honeycomb sheets (hexagonal_sheet) and PorousSheet
    table       AtomsTable: atoms on disk, read region by region
    raster      eq. (2): atoms -> fields, chunk by chunk (rasterize) or whole (cell_field)
    references  a model's elements and reference energies
    stream      score_atoms: atoms -> energy window by window, the field never held
    total_energy  energy(): the front door, for one cell or many
    sheet       porous_sheet(): a sheet of a given size to its energy and outputs folder
"""

from ednn_dask.atoms.materials import PorousSheet, hexagonal_sheet
from ednn_dask.atoms.raster import cell_field, rasterize
from ednn_dask.atoms.references import reference_sum
from ednn_dask.atoms.stream import AtomsScore, score_atoms
from ednn_dask.atoms.structure import ELEMENTS, SYMBOLS, Structure, as_source
from ednn_dask.atoms.table import AtomsTable, write_atoms_table
from ednn_dask.atoms.total_energy import energy

__all__ = [
    "ELEMENTS",
    "SYMBOLS",
    "AtomsScore",
    "AtomsTable",
    "PorousSheet",
    "Structure",
    "as_source",
    "cell_field",
    "energy",
    "hexagonal_sheet",
    "rasterize",
    "reference_sum",
    "score_atoms",
    "write_atoms_table",
]
