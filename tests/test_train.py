from __future__ import annotations

import json
import platform
import shutil

import numpy as np
import pytest
import torch

from ednn_dask.errors import CheckpointMismatchError, ConfigError
from tests.helpers import random_mlp_ednn
from training.ednn import EDNN
from training.export import export_onnx
from training.ising import sample_ising
from training.metrics import split_indices
from training.nets import ValidCNN
from training.train import TileCounts, TrainConfig, fit


def test_split_is_a_deterministic_partition():
    a = split_indices(100, 0.1, 0.2, seed=3)
    b = split_indices(100, 0.1, 0.2, seed=3)
    assert [len(s) for s in a] == [70, 10, 20]
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(100))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_distinct_tile_sums_equal_the_edNN_sums():
    ds = sample_ising(40, 6, temperatures=(1.0, 4.0), seed=2, sweeps=10)
    x = ds["spins"].values.astype(np.float32)[:, None]
    ednn = random_mlp_ednn(2).double()
    counts = TileCounts(ednn, x, (np.arange(40),))
    assert len(counts.tiles) <= 512
    with torch.no_grad():
        direct = ednn(torch.as_tensor(x, dtype=torch.float64))
        np.testing.assert_allclose(counts.predict(ednn, 0), direct, rtol=1e-12)


def test_fit_learns_resumes_and_exports(tmp_path):
    ds = sample_ising(300, 4, temperatures=(1.0, 5.0), seed=0, sweeps=10)
    x = ds["spins"].values.astype(np.float32)[:, None]
    y = ds["energy"].values
    ednn = random_mlp_ednn(2)
    cfg = TrainConfig(epochs=3, batch_size=32, lr=1e-3, seed=0)
    first = fit(ednn, x, y, cfg, tmp_path, progress=False)
    assert first["epochs_run"] == 3
    state = json.loads(torch.load(tmp_path / "checkpoint.pt", weights_only=True)["state"])
    assert state["epoch"] == 3
    # resuming continues from epoch 3 instead of starting over
    again = fit(random_mlp_ednn(2, seed=9), x, y, TrainConfig(epochs=5, batch_size=32, seed=0),
                tmp_path, progress=False)
    assert again["epochs_run"] == 5 and len(json.loads((tmp_path / "metrics.json").read_text()))
    assert (tmp_path / "parity.png").stat().st_size > 1000
    # a short full-batch distinct-tile run with L-BFGS beats predicting the mean
    ednn = random_mlp_ednn(2)
    fast = fit(ednn, x, y, TrainConfig(epochs=200, lr=3e-3, seed=0, unique_tiles=True,
                                       lbfgs_steps=100, checkpoint_every=50),
               tmp_path / "fast", progress=False)
    assert fast["test"]["mae"] < 0.1 * np.abs(y - y.mean()).mean()
    model = export_onnx(ednn, tmp_path / "m.onnx", target_unit="J",
                        provenance={"metrics": fast["test"]})
    assert model.spec.provenance["metrics"]["mae"] == fast["test"]["mae"]
    assert model.spec.provenance["producer"] == "ednn-dask training.export"


def test_a_copied_checkpoint_exports_the_best_weights_so_far_without_training(tmp_path):
    """Peeking at a running job: its checkpoint, copied, with --epochs at its epoch."""
    ds = sample_ising(200, 4, temperatures=(1.0, 5.0), seed=0, sweeps=10)
    x, y = ds["spins"].values.astype(np.float32)[:, None], ds["energy"].values
    running = random_mlp_ednn(2)
    fit(running, x, y, TrainConfig(epochs=4, batch_size=32, lr=1e-3, seed=0), tmp_path / "run",
        progress=False)
    (tmp_path / "peek").mkdir()
    shutil.copy(tmp_path / "run" / "checkpoint.pt", tmp_path / "peek")
    peek = random_mlp_ednn(2, seed=9)
    with pytest.raises(CheckpointMismatchError, match="made from 4 epochs already"):
        fit(peek, x, y, TrainConfig(epochs=3, batch_size=32, lr=1e-3, seed=0),
            tmp_path / "peek", progress=False)
    metrics = fit(peek, x, y, TrainConfig(epochs=4, batch_size=32, lr=1e-3, seed=0),
                  tmp_path / "peek", progress=False)
    assert metrics["epochs_run"] == 4
    for name, value in running.state_dict().items():
        torch.testing.assert_close(peek.state_dict()[name], value, rtol=0, atol=0)
    saved = torch.load(tmp_path / "peek" / "checkpoint.pt", weights_only=True)
    assert json.loads(saved["state"])["epoch"] == 4  # the copy is not trained further


def test_per_atom_loss(tmp_path):
    """Divisors of 1 change no number; atom counts make the best-epoch error per atom."""
    ds = sample_ising(120, 4, temperatures=(1.0, 5.0), seed=1, sweeps=10)
    x, y = ds["spins"].values.astype(np.float32)[:, None], ds["energy"].values
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-3, seed=0)
    plain = random_mlp_ednn(2)
    fit(plain, x, y, cfg, tmp_path / "plain", progress=False)
    ones = random_mlp_ednn(2)
    fit(ones, x, y, cfg, tmp_path / "ones", atoms=np.ones(len(y)), progress=False)
    for a, b in zip(plain.parameters(), ones.parameters()):
        assert torch.equal(a, b)
    atoms = np.random.default_rng(0).integers(20, 120, len(y))
    weighted = random_mlp_ednn(2)
    fit(weighted, x, y, cfg, tmp_path / "atoms", atoms=atoms, progress=False)
    assert not torch.equal(next(weighted.parameters()), next(plain.parameters()))
    state = json.loads(torch.load(tmp_path / "atoms" / "checkpoint.pt",
                                  weights_only=True)["state"])
    _, val, _ = split_indices(len(y), 0.1, 0.1, 0)
    with torch.no_grad():  # ``weighted`` holds the best epoch's weights
        predicted = weighted(torch.as_tensor(x[val])).double().numpy()
    per_atom = np.abs((predicted - y[val]) / atoms[val]).mean()
    assert state["best_val"] == pytest.approx(per_atom, rel=1e-6)


def test_augmentation_is_an_exact_symmetry():
    """Rolls and mirrors of periodic Ising lattices leave the exact EDNN energy unchanged."""
    import torch

    from tests.helpers import exact_ising_ednn
    from training.train import _augment

    ednn = exact_ising_ednn(2)
    x = torch.as_tensor(np.random.default_rng(0).choice([-1.0, 1.0], size=(6, 1, 10, 12)),
                        dtype=torch.float32)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        expected = ednn(x)
        moved = [_augment(x, generator) for _ in range(5)]
        assert sum(not torch.equal(m, x) for m in moved) >= 4  # (0, 0) unflipped is allowed
        for m in moved:
            assert torch.equal(ednn(m), expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch has a CUDA GPU")
def test_a_missing_gpu_is_refused_before_any_training(tmp_path, capsys):
    from ednn_dask.cli import main

    ednn = random_mlp_ednn(2)
    x = np.ones((4, 1, 4, 4), np.float32)
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        fit(ednn, x, np.zeros(4), TrainConfig(epochs=1, device="cuda"), tmp_path, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()
    out = tmp_path / "lap.onnx"
    assert main(["train", "laplacian", "--out", str(out), "--n", "8", "--L", "20",
                 "--workdir", str(tmp_path / "w"), "--device", "cuda"]) == 2
    assert "--device cpu" in capsys.readouterr().err
    assert not out.exists()


def test_an_unknown_device_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a torch device"):
        fit(random_mlp_ednn(2), np.ones((4, 1, 4, 4), np.float32), np.zeros(4),
            TrainConfig(epochs=1, device="gpu7"), tmp_path, progress=False)


def test_training_on_an_explicit_device_hands_the_net_back_on_the_cpu(tmp_path):
    ds = sample_ising(40, 4, temperatures=(1.0, 4.0), seed=1, sweeps=5)
    x = ds["spins"].values.astype(np.float32)[:, None]
    ednn = random_mlp_ednn(2)
    fit(ednn, x, ds["energy"].values, TrainConfig(epochs=2, batch_size=8, device="cpu:0"),
        tmp_path, progress=False)
    assert {p.device.type for p in ednn.parameters()} == {"cpu"}
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True, map_location="cpu")
    assert saved["model"].keys() == ednn.state_dict().keys()


def test_mean_readout_represents_the_laplacian_target_exactly():
    """Weights set by hand: +-Laplacian stencil, ReLU, identity, 100 x mean = sum |Laplacian|."""
    from training.laplacian import laplacian_images, laplacian_target

    net = ValidCNN(2, 1, (10, 10), (2, 2), trunk=((2, 3, 1), (2, 3, 1)), hidden=2,
                   readout="mean")
    stencil = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])
    centre = torch.zeros(3, 3)
    centre[1, 1] = 1.0
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.trunk[0].weight[:, 0] = torch.stack([stencil, -stencil])
        net.trunk[2].weight[0, 0], net.trunk[2].weight[1, 1] = centre, centre
        net.head.weight[:, :, 0, 0] = torch.eye(2)
        net.out.weight.fill_(100.0)  # mean over the 10x10 window, times 100
    ednn = EDNN(net, 10, 2, "periodic", ndim=2, dense=True).double()
    images = laplacian_images(3, 40, seed=5)
    x = torch.as_tensor(images, dtype=torch.float64)[:, None]
    predicted = ednn(x).detach().numpy().ravel()
    # rtol: the averaging kernel 1/100 is stored as float32 (relative error 2e-8)
    np.testing.assert_allclose(predicted, laplacian_target(images), rtol=1e-7)


def test_unknown_readout_is_refused():
    with pytest.raises(ValueError, match="readout must be"):
        ValidCNN(2, 1, (10, 10), (2, 2), readout="sum")
    with pytest.raises(ValueError, match="activation must be one of"):
        ValidCNN(2, 1, (10, 10), (2, 2), activation="tanh")


def test_lbfgs_in_blocks_follows_one_long_run():
    """The polish runs in blocks (for its progress bar) yet takes the path of one long run,
    and a chunked loss (gradients accumulated chunk by chunk) is the full-batch loss."""
    from training.train import _lbfgs

    torch.manual_seed(3)
    x, y = torch.randn(64, 5, dtype=torch.float64), torch.randn(64, 1, dtype=torch.float64)

    def make():
        torch.manual_seed(4)
        return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.SiLU(),
                                   torch.nn.Linear(8, 1)).double()

    one = make()
    optimizer = torch.optim.LBFGS(one.parameters(), lr=1, max_iter=60, history_size=100,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-14,
                                  tolerance_change=1e-16)

    def closure():
        optimizer.zero_grad()
        loss = torch.mean((one(x) - y) ** 2)
        loss.backward()
        return loss

    optimizer.step(closure)
    blocks = make()

    def chunked():
        total = torch.zeros((), dtype=torch.float64)
        for i in range(0, 64, 16):
            loss = torch.sum((blocks(x[i:i + 16]) - y[i:i + 16]) ** 2) / 64
            loss.backward()
            total += loss.detach()
        return total

    _lbfgs(blocks, chunked, 60, progress=False)
    for a, b in zip(one.parameters(), blocks.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
    assert not torch.equal(one[0].weight, make()[0].weight)  # it did move


TRAIN_STEPS = """
import hashlib, sys, torch
import training.train as T
assert sys.argv[1] == "off" or T.keep_freed_memory()
torch.set_num_threads(1)
torch.manual_seed(0)
from training.atomistic import build_net
ednn, x, y = build_net(3), torch.rand(8, 3, 128, 128), torch.randn(8)
optimizer = torch.optim.Adam(ednn.parameters(), 1e-3)
for i in range(4):
    loss = torch.mean((ednn(x[i % 2 * 4:][:4]) - y[:4]) ** 2)
    optimizer.zero_grad(); loss.backward(); optimizer.step()
print(hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in ednn.parameters())).hexdigest())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keeping_freed_memory_changes_no_number():
    """Reused (not zeroed) heap memory gives bit for bit the same training steps."""
    import subprocess
    import sys

    digests = [subprocess.run([sys.executable, "-c", TRAIN_STEPS, mode], check=True,
                              capture_output=True, text=True).stdout for mode in ("off", "on")]
    assert len(digests[0]) == 41 and digests[0] == digests[1]


def test_lbfgs_polish_is_kept_without_a_validation_split(tmp_path):
    """With val_fraction=0 the training loss picks the weights: L-BFGS must not be discarded."""
    ds = sample_ising(200, 4, temperatures=(1.0, 5.0), seed=2, sweeps=10)
    x, y = ds["spins"].values.astype(np.float32)[:, None], ds["energy"].values
    errors = {}
    for steps in (0, 100):
        ednn = random_mlp_ednn(2)
        cfg = TrainConfig(epochs=5, lr=3e-3, seed=0, unique_tiles=True, val_fraction=0.0,
                          lbfgs_steps=steps)
        errors[steps] = fit(ednn, x, y, cfg, tmp_path / str(steps), progress=False)["test"]["mae"]
    assert errors[100] < 0.5 * errors[0]


def test_the_blur_keeps_constants_and_removes_the_pixel_checkerboard():
    from training.nets import Blur

    blur = Blur(2, 3, 2)
    constant = torch.full((1, 3, 9, 9), 1.5)
    torch.testing.assert_close(blur(constant), torch.full((1, 3, 4, 4), 1.5))
    y, x = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    checkerboard = ((-1.0) ** (y + x)).expand(1, 3, 9, 9)  # what a stride of 2 aliases
    torch.testing.assert_close(blur(checkerboard), torch.zeros(1, 3, 4, 4))
    net = ValidCNN(2, 1, (4, 4), (3, 3), trunk=((4, 3, 2),), antialias="blurpool")
    assert [type(m).__name__ for m in net.trunk] == ["Conv2d", "ReLU", "Blur"]
    assert net.trunk[0].stride == (1, 1) and net.window == (3, 3)
    net = ValidCNN(2, 1, (4, 4), (3, 3), trunk=((4, 3, 2),), antialias="prefilter")
    assert [type(m).__name__ for m in net.trunk] == ["Blur", "Conv2d", "ReLU"]
    assert net.trunk[1].stride == (2, 2) and net.window == (3, 3)
    with pytest.raises(ConfigError, match="antialias must be"):
        ValidCNN(2, 1, (4, 4), (3, 3), trunk=((4, 3, 2),), antialias=True)
