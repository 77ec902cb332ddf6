"""Whitened first layer: a reparametrization that makes smooth inputs easy to train on.

Smooth fields (random images, rasterized Gaussians) have patch covariances whose
eigenvalues span orders of magnitude, and the fine differences that carry a
Laplacian or a bond length lie along the small ones, where gradient descent
crawls (whitened, the Laplacian net reached in 30 epochs about the error it had
after 150 plain ones).
:func:`whiten_first_layer` writes the first convolution's weight as
``W = V @ P`` with ``P = (M + eps)^(-1/2)``, ``M`` the second-moment matrix of the
training patches that convolution sees, so the trainable ``V`` sees whitened
patches. The functions the net can represent are unchanged; :func:`baked` folds
``P`` back into an ordinary convolution for export.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from ednn_dask.errors import ConfigError
from training.ednn import EDNN
from training.nets import CONV_FN

# Regularize M by this fraction of its mean eigenvalue: directions with less variance
# (numerical noise) are amplified by at most 1/sqrt(EPS).
EPS = 1e-4


class WhitenedConv(nn.Module):
    """A convolution whose weight is ``V @ P`` over the flattened (channels x kernel) axis."""

    def __init__(self, conv: nn.modules.conv._ConvNd, inverse_sqrt: torch.Tensor):
        super().__init__()
        self.conv = conv  # its weight is V; bias, stride and padding stay its own
        self.register_buffer("inverse_sqrt", inverse_sqrt)

    def effective_weight(self) -> torch.Tensor:
        v = self.conv.weight
        flat = v.reshape(v.shape[0], -1) @ self.inverse_sqrt.to(v.dtype)
        # in V's layout: a channels-last V (CPU training) picks the faster kernel
        return flat.reshape(v.shape).contiguous(memory_format=_layout(v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv._conv_forward(x, self.effective_weight(), self.conv.bias)


def _layout(t: torch.Tensor) -> torch.memory_format:
    last = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if last else torch.contiguous_format


def first_conv(net: nn.Module) -> nn.modules.conv._ConvNd:
    for module in net.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return module
    raise ConfigError(f"{type(net).__name__} has no convolution to whiten; train without "
                      "whitening (--no-whiten).")


def _parent(root: nn.Module, target: nn.Module) -> tuple[nn.Module, str]:
    for module in root.modules():
        for name, child in module.named_children():
            if child is target:
                return module, name
    raise ValueError("module not found")


#: at most this many bytes of patches when the moments are taken
PATCH_BYTES = 2**29


@torch.no_grad()
def patch_moments(ednn: EDNN, inputs: np.ndarray, max_samples: int = 256) -> torch.Tensor:
    """Second-moment matrix (float64) of the first convolution's input patches.

    Patches are taken as the net sees them: padded by the context and scaled by
    the EDNN's input offset and scale. The patches are extracted with an identity
    convolution, so any number of spatial axes works.
    """
    conv = first_conv(ednn.tile_net)
    c, kernel = conv.in_channels, tuple(conv.kernel_size)
    d = c * math.prod(kernel)
    eye = torch.eye(d, dtype=torch.float64).reshape(d, c, *kernel)
    # the patches of one sample take d * pixels * 8 bytes: a wide kernel gets fewer samples
    per_sample = d * math.prod(np.shape(inputs)[2:]) * 8
    max_samples = max(1, min(max_samples, PATCH_BYTES // per_sample))
    x = torch.as_tensor(np.asarray(inputs[:max_samples]), dtype=torch.float64)
    padded = (ednn.pad(x) - ednn.input_offset.double()) * ednn.input_scale.double()
    padded = _fixed_layers_before(conv, ednn.tile_net)(padded)
    patches = CONV_FN[len(kernel)](padded, eye, stride=conv.stride)  # (N, d, *out)
    flat = patches.transpose(0, 1).reshape(d, -1)
    return flat @ flat.T / flat.shape[1]


def _fixed_layers_before(conv: nn.Module, net: nn.Module) -> nn.Module:
    """The parameter-free layers of ``net``'s trunk before ``conv`` (a prefilter's blur),
    in float64: the first convolution sees its input through them."""
    layers = []
    for module in getattr(net, "trunk", ()):
        if module is conv:
            break
        if any(True for _ in module.parameters()):
            raise ConfigError(f"the first convolution follows a trained {module!r}.")
        layers.append(copy.deepcopy(module).double())
    return nn.Sequential(*layers)


def whiten_first_layer(ednn: EDNN, inputs: np.ndarray, eps: float = EPS) -> torch.Tensor:
    """Reparametrize the first convolution of ``ednn`` on whitened patches of ``inputs``.

    Call after the input scaling is set and before training; returns ``P``.
    """
    moments = patch_moments(ednn, inputs)
    values, vectors = torch.linalg.eigh(moments)
    floor = eps * float(values.mean())
    inverse_sqrt = (vectors * (values.clamp(min=0) + floor).rsqrt()) @ vectors.T
    # the default init of V (fan-in scaled) suits unit-covariance patches as it is
    conv = first_conv(ednn.tile_net)
    parent, name = _parent(ednn.tile_net, conv)
    setattr(parent, name, WhitenedConv(conv, inverse_sqrt.to(conv.weight.dtype)))
    return inverse_sqrt


def baked(ednn: EDNN) -> EDNN:
    """A copy of ``ednn`` with every whitened convolution folded into a plain one."""
    out = copy.deepcopy(ednn)
    for module in list(out.modules()):
        if isinstance(module, WhitenedConv):
            with torch.no_grad():
                module.conv.weight.copy_(module.effective_weight())
            parent, name = _parent(out, module)
            setattr(parent, name, module.conv)
    return out
