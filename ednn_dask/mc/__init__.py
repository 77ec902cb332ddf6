"""Metropolis Monte Carlo on EDNN tile models, with local energy updates."""

from ednn_dask.mc.lattice import ChainResult, colour_spacing, ising_chain, ising_scan
from ednn_dask.mc.local import Change, LocalEnergy, Proposal
from ednn_dask.mc.stats import blocked_mean

__all__ = ["ChainResult", "Change", "LocalEnergy", "Proposal", "blocked_mean", "colour_spacing",
           "ising_chain", "ising_scan"]
