"""The whitened first layer: patches come out white, the function class is unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ednn_dask.inference import contributions
from tests.helpers import random_cnn_ednn
from training.export import export_onnx
from training.laplacian import laplacian_images, laplacian_target
from training.precondition import (
    EPS,
    WhitenedConv,
    baked,
    first_conv,
    patch_moments,
    whiten_first_layer,
)
from training.train import TrainConfig, fit


@pytest.fixture(scope="module")
def images():
    return laplacian_images(64, 20, seed=0, correlation_length=(2.0, 6.0))[:, None]


@pytest.mark.parametrize("dim", [2, 3])
def test_whitened_patches_have_unit_moments(dim):
    ednn = random_cnn_ednn(dim, 2, (2,) * dim, (1,) * dim, "periodic")
    rng = np.random.default_rng(0)
    # strongly correlated channels and pixels: a smooth field and a scaled copy of it
    smooth = np.cumsum(np.cumsum(rng.normal(size=(8, 1, *(8,) * dim)), -1), -2)
    x = np.concatenate([smooth, 3 * smooth + 0.01 * rng.normal(size=smooth.shape)], 1)
    moments = patch_moments(ednn, x)
    assert np.linalg.cond(moments.numpy()) > 1e4
    p = whiten_first_layer(ednn, x)
    white = torch.linalg.eigvalsh(p @ moments @ p)
    floor = EPS * float(torch.linalg.eigvalsh(moments).mean())
    expected = torch.linalg.eigvalsh(moments)
    expected = expected / (expected + floor)  # eigenvalues of (M + floor)^-1 M
    torch.testing.assert_close(white, expected, rtol=1e-7, atol=1e-10)
    assert white.max() <= 1 + 1e-9 and white[-1] > 0.999


@pytest.mark.parametrize("antialias", [None, "blurpool", "prefilter"])
def test_moments_are_of_the_patches_the_first_convolution_sees(antialias, images):
    ednn = random_cnn_ednn(2, 1, (4, 4), (4, 4), "periodic", trunk=((4, 3, 2), (4, 1, 2)),
                           antialias=antialias)
    conv, seen = first_conv(ednn.tile_net), []
    conv.register_forward_pre_hook(lambda module, args: seen.append(args[0].double()))
    x = torch.as_tensor(images[:8], dtype=torch.float32)
    with torch.no_grad():
        ednn.tile_net((ednn.pad(x) - ednn.input_offset) * ednn.input_scale)
    eye = torch.eye(9, dtype=torch.float64).reshape(9, 1, 3, 3)
    flat = torch.nn.functional.conv2d(seen[0], eye, stride=conv.stride).transpose(0, 1)
    flat = flat.reshape(9, -1)
    torch.testing.assert_close(patch_moments(ednn, images[:8]), flat @ flat.T / flat.shape[1],
                               rtol=1e-5, atol=0)


def test_whitening_is_a_reparametrization_that_exports_as_a_plain_conv(tmp_path, images):
    ednn = random_cnn_ednn(2, 1, (10, 10), (2, 2), "periodic")
    plain = random_cnn_ednn(2, 1, (10, 10), (2, 2), "periodic")
    whiten_first_layer(ednn, images)
    x = torch.as_tensor(images[:4], dtype=torch.float32)
    with torch.no_grad():
        expected = ednn(x)
        flat = baked(ednn)
        torch.testing.assert_close(flat(x), expected)
    # the baked copy has exactly the parameters and buffers of an unwhitened net
    assert flat.state_dict().keys() == plain.state_dict().keys()
    assert ednn.n_parameters == plain.n_parameters
    model = export_onnx(ednn, tmp_path / "w.onnx")
    scored = contributions(images[0, 0], model).sum(dtype=np.float64)
    assert scored == pytest.approx(float(expected[0]), rel=1e-5)
    # the exported graph has no more weights than an unwhitened one
    import onnx

    def weight_sizes(path):
        return sorted(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)

    export_onnx(plain, tmp_path / "p.onnx")
    assert weight_sizes(tmp_path / "w.onnx") == weight_sizes(tmp_path / "p.onnx")


def test_whitened_training_resumes_from_its_checkpoint(tmp_path, images):
    y = laplacian_target(images[:, 0])
    ednn = random_cnn_ednn(2, 1, (10, 10), (2, 2), "periodic")
    whiten_first_layer(ednn, images)
    fit(ednn, images, y, TrainConfig(epochs=2, batch_size=16, seed=0), tmp_path, progress=False)
    again = random_cnn_ednn(2, 1, (10, 10), (2, 2), "periodic", seed=5)
    whiten_first_layer(again, images)
    metrics = fit(again, images, y, TrainConfig(epochs=3, batch_size=16, seed=0), tmp_path,
                  progress=False)
    assert metrics["epochs_run"] == 3
    assert isinstance(again.tile_net.trunk[0], WhitenedConv)
    assert again.tile_net.trunk[0].conv.weight.requires_grad


def test_first_conv_is_required():
    from tests.helpers import random_mlp_ednn

    with pytest.raises(ValueError, match="no convolution"):
        whiten_first_layer(random_mlp_ednn(2), np.zeros((2, 1, 4, 4), np.float32))


def test_channels_last_training_layout_changes_no_number(images):
    """fit trains on the CPU with channels-last weights; the whitened weight keeps that
    layout (so oneDNN's faster kernel is used) and every output is the default one's."""
    two = np.concatenate([images, images[::-1]], axis=1)  # one channel is either layout
    ednn = random_cnn_ednn(2, 2, (10, 10), (2, 2), "periodic")
    whiten_first_layer(ednn, two)
    x = torch.as_tensor(two[:4], dtype=torch.float32)
    with torch.no_grad():
        expected = ednn(x)
    ednn.to(memory_format=torch.channels_last)
    whitened = ednn.tile_net.trunk[0]
    assert whitened.effective_weight().is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(ednn(x), expected, rtol=1e-5, atol=1e-6)


def test_fit_hands_back_weights_in_the_default_layout(tmp_path, images):
    y = laplacian_target(images[:, 0])
    ednn = random_cnn_ednn(2, 1, (10, 10), (2, 2), "periodic")
    whiten_first_layer(ednn, images)
    fit(ednn, images, y, TrainConfig(epochs=1, batch_size=16, seed=0), tmp_path, progress=False)
    assert all(p.is_contiguous() for p in ednn.parameters())
    assert ednn.tile_net.trunk[0].effective_weight().is_contiguous()


def test_a_three_dimensional_net_trains_in_its_own_layout(tmp_path):
    """channels-last is a 4-D layout: 3-D nets train in the default one."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 1, 8, 8, 8)).astype(np.float32)
    ednn = random_cnn_ednn(3, 1, (4, 4, 4), (1, 1, 1), "periodic")
    metrics = fit(ednn, x, x.sum(axis=(1, 2, 3, 4)), TrainConfig(epochs=1, batch_size=4, seed=0),
                  tmp_path, progress=False)
    assert metrics["epochs_run"] == 1
