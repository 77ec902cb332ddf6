"""Training loop: Adam on the MSE of the per-sample sum, with splits, checkpoints and plots.

Checkpoints hold only tensors and plain numbers and are read back with
``torch.load(weights_only=True)``: nothing is ever unpickled.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ednn_dask.errors import CheckpointMismatchError, ConfigError
from training.config import TrainConfig
from training.ednn import EDNN
from training.metrics import error_metrics, parity_plot, split_indices

LBFGS_CHUNK = 256  # samples per forward/backward of the full-batch L-BFGS loss
# settings a checkpoint may be resumed under when they differ; every other TrainConfig
# field (and the data and the net) must be what the checkpoint was made from
RESUMABLE = ("epochs", "patience", "threads", "checkpoint_every", "device", "lbfgs_steps",
             "lbfgs_samples", "lbfgs_float64")


def default_threads() -> int:
    """torch CPU threads for training: the idle cores this process may run on, at least one.

    The cores are those of ``os.sched_getaffinity`` (a job's allotment, not the
    machine's), less those busy now: their use over half a second, rounded to whole
    cores. (The load average lags by minutes: just after another job ends it still
    counts that job.) On a machine with one of two cores busy, two threads make each
    epoch several times slower than one, as the threads wait for each other at every
    convolution. ``OMP_NUM_THREADS``, where set, wins (torch reads it itself).
    """
    import psutil

    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(
        range(os.cpu_count() or 1))
    use = psutil.cpu_percent(interval=0.5, percpu=True)
    busy = round(sum(use[c] for c in cores if c < len(use)) / 100)
    return max(1, len(cores) - busy)


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process instead of handing it back to the OS.

    Training frees and reallocates large activation tensors every mini-batch, and by
    default each is its own mmap that the next batch faults in afresh, so CPU training
    spends much of its time in the kernel; with this the heap stays at its peak size,
    which for training is the working set anyway. Process-wide: entry points call it
    (the CLI's ``train`` does), :func:`fit` does not. Returns False where the C library
    is not glibc (nothing changed).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def fit(
    ednn: EDNN,
    inputs: np.ndarray,
    targets: np.ndarray,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    sites: int | None = None,
    atoms: np.ndarray | None = None,
    progress: bool = True,
    data_hash: str | None = None,
    set_scaling: bool = True,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Train ``ednn`` on ``inputs (N, C, *spatial)`` -> ``targets (N,)``; resume if possible.

    ``inputs`` is an array in memory, or a :class:`training.field_data.SampleStream`
    that reads the samples from their store a slab at a time through a shuffle
    buffer (memory flat in the number of samples; not with ``unique_tiles``).

    The per-tile output scaling is set from the training targets so the net sees
    targets of order one (``set_scaling=False`` keeps the EDNN's own: a net that
    starts from a trained model's weights). Writes ``checkpoint.pt`` (every epoch), ``metrics.json``
    and ``parity.png`` to ``out_dir`` and returns the metrics. ``sites`` (pixels
    per sample, default all of them) turns errors into per-site errors. ``atoms``
    (N,), if given, makes the loss and the validation error (which picks the best
    epoch) per atom: the metric of data sets whose structures differ in size.
    ``splits`` (train, val, test indices) replaces the seeded shuffle of
    ``config``'s fractions, e.g. to keep correlated samples on one side.

    ``ednn`` is left with the best weights, not the last epoch's: those of the Adam
    epoch with the lowest validation error, replaced by the L-BFGS result
    (``config.lbfgs_steps``) only where that validates better still; the returned
    ``best_epoch`` says which Adam epoch it was. fit sets torch's seed and thread
    count (``config.threads``, default :func:`default_threads` on the CPU) but no
    allocator options: for faster CPU training, call
    :func:`training.train.keep_freed_memory` first, as the CLI does.

    Checkpoints record what they were made from: the data (``data_hash``, default a
    hash of ``inputs``, ``targets`` and ``atoms``), the EDNN (tiling, net classes and
    parameter shapes) and the settings outside :data:`RESUMABLE`. An existing
    ``checkpoint.pt`` in ``out_dir`` is resumed only when all of these match, and
    refused with :class:`~ednn_dask.errors.CheckpointMismatchError` otherwise. A
    larger ``config.epochs`` continues a run (the learning rate keeps decaying at
    the rate it was started with); a run that stopped early, or reached its epochs,
    is not trained further: fit then only redoes the L-BFGS polish and the metrics.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.threads or (_device(config.device).type == "cpu"
                          and "OMP_NUM_THREADS" not in os.environ):
        torch.set_num_threads(config.threads or default_threads())
    torch.manual_seed(config.seed)
    device = _device(config.device)
    if device.type == "cuda":
        # TF32 convolutions round inputs to 10 mantissa bits: too coarse for meV/atom
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    streamed = hasattr(inputs, "batches")
    if data_hash is None:
        data_hash = _hash_arrays(inputs, targets, atoms)
    source = _StreamSource(inputs, device) if streamed else _ArraySource(
        torch.as_tensor(np.asarray(inputs, dtype=np.float32)).to(device))
    y = torch.as_tensor(np.asarray(targets, dtype=np.float64)).to(device)
    per = torch.as_tensor(np.ones(len(y)) if atoms is None else np.asarray(atoms, np.float64))
    per = per.to(device)  # divides every error: 1 (per sample) or the atom count
    if config.augment and ednn.tiling.boundary != "periodic":
        raise ConfigError("augment rolls samples periodically; it needs a periodic boundary.")
    if len(y) != len(source):
        raise ConfigError(f"{len(source)} inputs but {len(y)} targets; give one target per input.")
    if streamed and config.unique_tiles:
        raise ConfigError("unique_tiles needs the inputs in memory, not a SampleStream.")
    train, val, test = splits if splits is not None else split_indices(
        len(y), config.val_fraction, config.test_fraction, config.seed)
    n_tiles = math.prod(ednn.tiling.grid(source.shape[2:]))
    made_from = _made_from(ednn, config, data_hash)  # before the scaling: shapes, not values
    if set_scaling:
        _set_output_scaling(ednn, y[train], n_tiles)
    scale = float((y[train] / per[train]).std()) or 1.0
    counts = TileCounts(ednn, inputs, (train, val), device) if config.unique_tiles else None
    if counts is not None:
        ednn.double()
    ednn.to(device)
    if device.type == "cpu" and ednn.tiling.ndim == 2:
        # oneDNN convolves NHWC weights 1.4-1.5x faster on these CPUs, with the same
        # values (bench/train_speed.py); the weights' layout alone decides the kernel
        ednn.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(ednn.parameters(), lr=config.lr)
    gamma = (config.lr_final / config.lr) ** (1 / max(1, config.epochs))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    state = {"epoch": 0, "best_val": math.inf, "best_epoch": 0, "history": [],
             "stopped": False, "made_from": made_from}
    best = {k: v.clone() for k, v in ednn.state_dict().items()}
    ckpt = out_dir / "checkpoint.pt"
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=True, map_location=device)
        _check_resumable(ckpt, json.loads(saved["state"]), made_from, config)
        ednn.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        best, state = saved["best"], json.loads(saved["state"])
    generator = torch.Generator().manual_seed(config.seed + state["epoch"])
    first = config.epochs if state["stopped"] else state["epoch"]
    bar = tqdm(range(first, config.epochs), desc="epochs", disable=not progress)
    t0 = time.perf_counter()

    def batch_loss(idx, xb) -> torch.Tensor:
        if counts is not None:
            return torch.mean(((counts.predict(ednn, 0) - y[train]) / per[train] / scale) ** 2)
        xb = _augment(xb, generator) if config.augment else xb
        return torch.mean(((ednn(xb) - y[idx].float()) / per[idx].float() / scale) ** 2)

    def val_mae() -> float:
        if counts is not None:
            with torch.no_grad():
                return float(((counts.predict(ednn, 1) - y[val]) / per[val]).abs().mean())
        return _mae(ednn, source, val, y, per)

    for epoch in bar:
        ednn.train()
        step = len(train) if counts is not None else config.batch_size
        for idx, xb in source.batches(train, step, generator, load=counts is None):
            loss = batch_loss(idx, xb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        mae = val_mae() if len(val) else loss.item()
        state["epoch"] = epoch + 1
        state["history"].append({"epoch": epoch + 1, "val_mae": mae, "loss": loss.item()})
        if mae < state["best_val"]:
            state["best_val"], state["best_epoch"] = mae, epoch + 1
            best = {k: v.clone() for k, v in ednn.state_dict().items()}
        bar.set_postfix(val_mae=f"{mae:.3g}", best=f"{state['best_val']:.3g}")
        state["stopped"] = epoch + 1 - state["best_epoch"] >= config.patience
        if ((epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs
                or state["stopped"]):
            _save_checkpoint(ckpt, ednn, optimizer, scheduler, best, state)
        if state["stopped"]:
            break  # early stopping: no better validation error for `patience` epochs
    if config.lbfgs_steps:
        ednn.load_state_dict(best)
        dtype = torch.float64 if config.lbfgs_float64 or counts is not None else torch.float32
        ednn.to(dtype)
        # full batch, capped: L-BFGS needs exact gradients, not every sample
        subset = train if counts is not None else train[: config.lbfgs_samples]
        x_train = None if counts is not None else source.take(subset).to(device, dtype)
        y_train, per_train = y[subset].to(dtype), per[subset].to(dtype)

        def loss_and_gradient() -> torch.Tensor:
            if counts is not None:
                parts = [(counts.predict(ednn, 0), y_train, per_train)]
            else:  # chunks, each freed after its backward: memory of one chunk, not all
                chunks = (slice(i, i + LBFGS_CHUNK) for i in range(0, len(x_train), LBFGS_CHUNK))
                parts = ((ednn(x_train[c]), y_train[c], per_train[c]) for c in chunks)
            total = torch.zeros((), dtype=dtype, device=device)
            for pred, target, divisor in parts:
                loss = torch.sum(((pred - target) / divisor / scale) ** 2) / len(y_train)
                loss.backward()
                total += loss.detach()
            return total

        _lbfgs(ednn, loss_and_gradient, config.lbfgs_steps, progress)
        mae = val_mae() if len(val) else -math.inf  # no validation split: keep the polish
        if mae < state["best_val"]:
            state["best_val"] = mae if len(val) else state["best_val"]
            best = {k: v.clone() for k, v in ednn.state_dict().items()}
    ednn.load_state_dict(best)
    ednn.float().cpu().to(memory_format=torch.contiguous_format)
    y = y.cpu()
    sites = sites or math.prod(source.shape[2:])
    metrics = {
        "config": asdict(config),
        "n_train": len(train), "n_val": len(val), "n_test": len(test),
        "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
        "seconds": time.perf_counter() - t0,
        "n_parameters": ednn.n_parameters,
        "data_hash": data_hash,
        "test": _errors(ednn, source, test, y, sites) if len(test) else {},
        "val": _errors(ednn, source, val, y, sites) if len(val) else {},
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if len(test):
        parity_plot(y[test].numpy(), predict_indices(ednn, source, test), out_dir / "parity.png",
                    sites=sites)
    return metrics


class _ArraySource:
    """Inputs in memory (on the training device), read as fit reads a stream."""

    def __init__(self, x: torch.Tensor):
        self.x, self.shape = x, tuple(x.shape)

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, indices, batch_size: int, generator: torch.Generator, load: bool = True):
        order = indices[torch.randperm(len(indices), generator=generator).numpy()]
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield idx, self.x[idx] if load else None

    def ordered(self, indices, batch_size: int = 1024):
        for start in range(0, len(indices), batch_size):
            idx = indices[start : start + batch_size]
            yield idx, self.x[idx]

    def take(self, indices) -> torch.Tensor:
        return self.x[indices]


class _StreamSource:
    """A :class:`training.field_data.SampleStream`, its batches as tensors on ``device``."""

    def __init__(self, stream, device: torch.device):
        self.stream, self.device, self.shape = stream, device, tuple(stream.shape)

    def __len__(self) -> int:
        return len(self.stream)

    def batches(self, indices, batch_size: int, generator: torch.Generator, load: bool = True):
        # the generator draws the shuffle's seed: a resumed run repeats the same epochs
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        for idx, xb in self.stream.batches(indices, batch_size, rng):
            yield idx, torch.as_tensor(xb).to(self.device)

    def ordered(self, indices, batch_size: int = 1024):
        for idx, xb in self.stream.ordered(indices, batch_size):
            yield idx, torch.as_tensor(xb)

    def take(self, indices) -> torch.Tensor:
        return torch.as_tensor(self.stream.take(indices))


def predict_indices(ednn: EDNN, source, indices: np.ndarray) -> np.ndarray:
    """Predictions for the samples ``indices`` of a source, in the order of ``indices``."""
    indices = np.asarray(indices)
    parts = [(idx, predict(ednn, xb)) for idx, xb in source.ordered(indices, 1024)]
    if not parts:
        return np.zeros(0)
    got = np.concatenate([p[0] for p in parts])
    values = np.concatenate([p[1] for p in parts])
    if np.array_equal(got, indices):
        return values
    order = np.argsort(got)
    return values[order][np.searchsorted(got[order], indices)]


def _hash_arrays(*arrays) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        if a is not None:
            a = np.ascontiguousarray(np.asarray(a))
            digest.update(f"{a.dtype.str}|{a.shape}|".encode())
            digest.update(a.tobytes())
    return digest.hexdigest()[:16]


def _made_from(ednn: EDNN, config: TrainConfig, data_hash: str) -> dict[str, Any]:
    """What a checkpoint is made from: the data, the EDNN's shape, the fixed settings."""
    t = ednn.tiling
    net = getattr(ednn, "tile_net", ednn)  # a MultiScaleEDNN: all its branches
    shapes = [f"{k}:{tuple(v.shape)}" for k, v in ednn.state_dict().items()]
    modules = [type(m).__name__ for m in net.modules()]
    factors = [ednn.factors] if hasattr(ednn, "factors") else []
    signature = json.dumps([t.focus, t.context, str(t.boundary), ednn.dense, modules, shapes,
                            *factors])
    return {
        "data": data_hash,
        "net": f"{type(net).__name__}, {ednn.n_parameters} parameters, focus "
               f"{t.focus}, context {t.context}, boundary {t.boundary}",
        "net_digest": hashlib.sha256(signature.encode()).hexdigest()[:16],
        "config": {k: v for k, v in asdict(config).items() if k not in RESUMABLE},
    }


def _check_resumable(ckpt: Path, saved: dict[str, Any], made_from: dict[str, Any],
                     config: TrainConfig) -> None:
    """Refuse, in one line, a checkpoint made from other data, net or settings."""
    remedy = "use another --workdir (Python: out_dir) or delete it to start over"
    was = saved.get("made_from")
    if was is None:
        raise CheckpointMismatchError(
            f"checkpoint {str(ckpt)!r} does not record what it was made from (an older "
            f"version wrote it), so it cannot be resumed safely; {remedy}.")
    if was["data"] != made_from["data"]:
        diff = f"data hash {was['data']}, not {made_from['data']}: other data"
    elif was["net_digest"] != made_from["net_digest"]:
        diff = f"net {was['net']!r}, not {made_from['net']!r}"
        if was["net"] == made_from["net"]:
            diff += " (same size, other layers)"
    elif was["config"] != made_from["config"]:
        keys = sorted(k for k in {*was["config"], *made_from["config"]}
                      if was["config"].get(k) != made_from["config"].get(k))
        diff = "settings " + ", ".join(
            f"{k}={was['config'].get(k)!r} (now {made_from['config'].get(k)!r})" for k in keys)
    elif saved["epoch"] > config.epochs:
        diff = f"{saved['epoch']} epochs already, more than epochs={config.epochs}"
    else:
        return
    raise CheckpointMismatchError(
        f"checkpoint {str(ckpt)!r} was made from {diff}; it is resumed only with what it was "
        f"made from: {remedy}.")


def _device(name: str) -> torch.device:
    """``name`` as a torch device, refused with the fix when this torch cannot use it."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"{name!r} is not a torch device ({err}); use cpu or cuda.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: torch {torch.__version__} sees no CUDA GPU here; "
                          "train with --device cpu, or on a machine with a GPU and a CUDA "
                          "build of torch.")
    return device


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random periodic roll and random mirrors of the spatial axes of a batch."""
    axes = tuple(range(2, x.ndim))
    shifts = [int(torch.randint(n, (1,), generator=generator)) for n in x.shape[2:]]
    x = torch.roll(x, shifts, axes)
    flips = [a for a in axes if torch.rand(1, generator=generator) < 0.5]
    return torch.flip(x, flips) if flips else x


class TileCounts:
    """Exact EDNN sums for discrete inputs, running each distinct tile once per step.

    The EDNN prediction of sample ``i`` is ``sum_k counts[i, k] * contribution(tile_k)``
    over the distinct tiles ``tile_k`` of the data set: the same sum the EDNN takes,
    but binary spins in 3x3 tiles have at most 512 distinct tiles, so a full-batch
    step costs 512 tile evaluations instead of one per tile of every sample.
    """

    def __init__(self, ednn: EDNN, inputs: np.ndarray, splits, device: torch.device | None = None):
        nd = ednn.tiling.ndim
        tiles = np.moveaxis(ednn.tiling.tiles(np.asarray(inputs)), 1, 1 + nd)
        n, n_tiles = tiles.shape[0], math.prod(tiles.shape[1 : 1 + nd])
        flat = tiles.reshape(n * n_tiles, -1)
        unique, inverse = np.unique(flat, axis=0, return_inverse=True)
        unique = unique.reshape(-1, *tiles.shape[1 + nd :])
        self.tiles = torch.as_tensor(unique, dtype=torch.float64, device=device)
        inverse = inverse.reshape(n, n_tiles)
        self.counts = [self._counts(inverse[idx], len(unique)).to(device) for idx in splits]

    @staticmethod
    def _counts(inverse: np.ndarray, k: int) -> torch.Tensor:
        rows = np.repeat(np.arange(len(inverse)), inverse.shape[1])
        index = torch.as_tensor(np.stack([rows, inverse.ravel()]))
        values = torch.ones(index.shape[1], dtype=torch.float64)
        return torch.sparse_coo_tensor(
            index, values, (len(inverse), k), check_invariants=True
        ).coalesce()

    def predict(self, ednn: EDNN, split: int) -> torch.Tensor:
        contribution = ednn.tile_contributions(self.tiles)
        return torch.sparse.mm(self.counts[split], contribution[:, None])[:, 0]


def _lbfgs(ednn: EDNN, loss_and_gradient, steps: int, progress: bool = True) -> None:
    """Full-batch L-BFGS polish: reaches the precision Adam's noise cannot.

    ``loss_and_gradient()`` returns the loss and has accumulated its gradient.
    Runs in blocks of iterations so a bar shows the loss; the optimizer keeps its
    curvature history between blocks, so the path is that of one long run.
    """
    block = min(25, steps)
    optimizer = torch.optim.LBFGS(ednn.parameters(), lr=1, max_iter=block, history_size=100,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-14,
                                  tolerance_change=1e-16)

    def closure():
        optimizer.zero_grad()
        return loss_and_gradient()

    done = 0
    with tqdm(total=steps, desc="L-BFGS", disable=not progress) as bar:
        while done < steps:
            group = optimizer.param_groups[0]  # L-BFGS has one group; its state sits on param 0
            group["max_iter"] = min(block, steps - done)
            group["max_eval"] = group["max_iter"] * 5 // 4
            loss = optimizer.step(closure)
            n_iter = optimizer.state[group["params"][0]].get("n_iter", 0)
            if n_iter == done:
                break  # converged: no iteration was taken
            bar.update(n_iter - done)
            bar.set_postfix(loss=f"{float(loss):.3g}")
            done = n_iter


def _set_output_scaling(ednn: EDNN, y: torch.Tensor, n_tiles: int) -> None:
    if hasattr(ednn, "set_output_scaling"):  # a MultiScaleEDNN spreads it over its branches
        ednn.set_output_scaling(float(y.mean()), float(y.std()) or 1.0, n_tiles)
        return
    ednn.output_offset.fill_(float(y.mean()) / n_tiles)
    ednn.output_scale.fill_((float(y.std()) or 1.0) / math.sqrt(n_tiles))


def _save_checkpoint(path, ednn, optimizer, scheduler, best, state) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "model": ednn.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "best": best,
            "state": json.dumps(state),
        },
        tmp,
    )
    os.replace(tmp, path)


@torch.no_grad()
def predict(ednn: EDNN, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """Extensive predictions in float64 for a batch of inputs."""
    ednn.eval()
    weight = next(ednn.parameters())
    x = x.to(weight.device, weight.dtype)
    out = [ednn(x[i : i + batch_size]).double() for i in range(0, len(x), batch_size)]
    return torch.cat(out).cpu().numpy() if out else np.zeros(0)


def _mae(ednn: EDNN, source, idx, y: torch.Tensor, per: torch.Tensor) -> float:
    predicted = predict_indices(ednn, source, idx)
    return float(np.abs((predicted - y[idx].cpu().numpy()) / per[idx].cpu().numpy()).mean())


def _errors(ednn: EDNN, source, idx, y: torch.Tensor, sites: int) -> dict[str, float]:
    return error_metrics(predict_indices(ednn, source, idx), y[idx].numpy(), sites)
