"""Metropolis Monte Carlo on EDNN tile models, with local energy updates.

    local     LocalEnergy: a change in a box rescores only the focus blocks that see it
    lattice   spin-flip chains of lattice models (colour classes, one onnxruntime call each)
    atoms     single-atom displacement chains of atomistic models (stamps moved, not re-rasterized)
    stats     blocking-analysis error bars
"""

from ednn_dask.mc.atoms import AtomsChain, AtomsRun
from ednn_dask.mc.lattice import ChainResult, colour_spacing, ising_chain, ising_scan
from ednn_dask.mc.local import Change, LocalEnergy, Proposal
from ednn_dask.mc.stats import blocked_mean

__all__ = [
    "AtomsChain",
    "AtomsRun",
    "ChainResult",
    "Change",
    "LocalEnergy",
    "Proposal",
    "blocked_mean",
    "colour_spacing",
    "ising_chain",
    "ising_scan",
]
