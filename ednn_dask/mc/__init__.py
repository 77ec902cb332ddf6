"""Metropolis Monte Carlo on EDNN tile models, with local energy updates."""

from ednn_dask.mc.local import Change, LocalEnergy, Proposal

__all__ = ["Change", "LocalEnergy", "Proposal"]
