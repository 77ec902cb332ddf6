"""Metropolis Monte Carlo on EDNN tile models, with local energy updates.

    local     LocalEnergy: a change in a box rescores only the focus blocks that see it
    lattice   spin-flip chains of lattice models (colour classes, one onnxruntime call each)
    cluster   Wolff cluster proposals corrected to the EDNN energy (exact near T_c)
    binder    resumable cluster runs, histogram reweighting, Binder-cumulant crossings
    atoms     single-atom displacement chains of atomistic models (stamps moved, not re-rasterized)
    checkerboard  batched atom moves: one per cell of a shifted checkerboard, one onnxruntime call
    domains   lattices split into regions, one task each, on a Dask cluster
    sheet_domains  atom sheets split into regions the same way (atoms cross boundaries through dask)
    runs      resumable runs: a Zarr store of frames plus the chain's state
    rdf       the in-plane g(r)
    plots     energy traces and g(r)
    stats     blocking-analysis error bars
"""

from ednn_dask.mc.atoms import AtomsChain, AtomsRun, run_atoms
from ednn_dask.mc.checkerboard import Checkerboard
from ednn_dask.mc.cluster import WolffChain, wolff_chain
from ednn_dask.mc.domains import decomposed_ising_chain
from ednn_dask.mc.lattice import ChainResult, IsingChain, colour_spacing, ising_chain, ising_scan
from ednn_dask.mc.local import Change, LocalEnergy, Proposal
from ednn_dask.mc.rdf import InPlaneRDF
from ednn_dask.mc.sheet_domains import SheetRun, decomposed_atoms_chain
from ednn_dask.mc.stats import blocked_mean

__all__ = [
    "AtomsChain",
    "AtomsRun",
    "ChainResult",
    "Change",
    "Checkerboard",
    "InPlaneRDF",
    "IsingChain",
    "LocalEnergy",
    "Proposal",
    "SheetRun",
    "WolffChain",
    "blocked_mean",
    "colour_spacing",
    "decomposed_atoms_chain",
    "decomposed_ising_chain",
    "ising_chain",
    "ising_scan",
    "run_atoms",
    "wolff_chain",
]
