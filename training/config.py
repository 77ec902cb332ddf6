"""Hyper-parameters of a training run and where it keeps its files (no torch needed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def run_dir(out: Path, workdir: str | None) -> Path:
    """Where a run keeps its checkpoints and metrics: ``workdir``, default ``runs/<model stem>``."""
    return Path(workdir) if workdir else Path("runs") / out.stem


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`training.train.fit` (the paper's Table 1 uses Adam and MSE).

    Adam runs ``epochs`` epochs of mini-batches of ``batch_size``, its learning rate
    decaying exponentially from ``lr`` to ``lr_final``, and stops early after
    ``patience`` epochs without a better validation error. ``val_fraction`` and
    ``test_fraction`` of the samples are held out (split by ``seed``); ``threads``
    sets torch's CPU threads; a checkpoint is written every ``checkpoint_every``
    epochs, and a run resumes from it.

    ``unique_tiles`` trains full-batch in float64 on the distinct tiles of the data
    (:class:`~training.train.TileCounts`, exact for discrete inputs such as spins);
    ``lbfgs_steps`` then polishes the Adam result with L-BFGS on the same full batch
    (or on the first ``lbfgs_samples`` training samples), in float64 unless
    ``lbfgs_float64`` is off: float32 is faster and enough where the loss stays far
    above float32 round-off (the Laplacian). ``device`` (e.g. ``"cuda"``) is where
    the data and the net live while training; the trained net is handed back on the
    CPU, so export and checkpoints do not depend on it. ``augment`` (periodic samples
    only) rolls each mini-batch by a random whole number of pixels and mirrors it at
    random: exact symmetries of a periodic field that leave its total unchanged but
    move it against the focus grid.
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    lr_final: float = 1e-6
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    patience: int = 40
    threads: int | None = None
    unique_tiles: bool = False
    lbfgs_steps: int = 0
    lbfgs_samples: int = 256
    lbfgs_float64: bool = True
    checkpoint_every: int = 1
    augment: bool = False
    device: str = "cpu"
