"""Smooth random periodic images and their exact target, the sum of |5-point Laplacian|.

The preprint's Laplacian example: the target is a sum of local terms, so an
EDNN with a context of one pixel can learn it exactly.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ednn_dask.compute import progress_bar
from ednn_dask.errors import ConfigError, FieldError

# laplacian_images draws correlation lengths in [2, L/8] px: (2, 6.25) for the L=50 training set
TRAIN_CORRELATION = (2.0, 50 / 8)
# Images per FFT batch in laplacian_images (bounds memory, fixed for determinism).
_IMAGES_PER_BATCH = 256


def laplacian_images(
    n: int,
    L: int = 100,
    *,
    seed: int = 0,
    correlation_length: float | tuple[float, float] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Smooth random periodic images: Gaussian random fields, one per sample.

    White noise is low-pass filtered in Fourier space with a Gaussian spectrum
    (equivalent to a periodic convolution with a Gaussian of standard deviation
    ``correlation_length`` pixels); every image is then shifted and scaled to
    zero mean and unit standard deviation.

    Parameters
    ----------
    n : int
        Number of images.
    L : int, optional
        Image side in pixels.
    seed : int, optional
        Seed; the same seed gives the same images.
    correlation_length : float or (float, float), optional
        Correlation length in pixels: one value for all images, or a range from
        which each image draws its own log-uniformly.  Default: the range
        ``(2, max(2, L / 8))``, smooth features from a few pixels to ~L/8.
    progress : bool, optional
        Show a tqdm progress bar.

    Returns
    -------
    numpy.ndarray
        Images, float32, shape ``(n, L, L)``.
    """
    if n < 0 or L < 1:
        raise ConfigError(f"need n >= 0 and L >= 1; got n={n}, L={L}")
    rng = np.random.default_rng(seed)
    if correlation_length is None:
        correlation_length = (2.0, max(2.0, L / 8))
    if np.ndim(correlation_length) == 0:
        lo = hi = float(correlation_length)  # type: ignore[arg-type]
    else:
        lo, hi = (float(c) for c in correlation_length)  # type: ignore[union-attr]
    if not 0 < lo <= hi:
        raise ConfigError(
            f"correlation_length must be positive (lo <= hi), got {correlation_length}"
        )
    # Log-uniform so that short and long correlation lengths are equally common.
    lengths = np.exp(rng.uniform(np.log(lo), np.log(hi), size=n))
    k2 = (2 * np.pi) ** 2 * (
        np.fft.fftfreq(L)[:, None] ** 2 + np.fft.rfftfreq(L)[None, :] ** 2
    )  # squared angular wavenumber per pixel, rfft2 layout
    images = np.empty((n, L, L), dtype=np.float32)
    with progress_bar(n, progress, "images") as bar:
        for start in range(0, n, _IMAGES_PER_BATCH):
            stop = min(n, start + _IMAGES_PER_BATCH)
            noise = rng.standard_normal((stop - start, L, L))
            filt = np.exp(-0.5 * lengths[start:stop, None, None] ** 2 * k2)
            field = np.fft.irfft2(np.fft.rfft2(noise) * filt, s=(L, L))
            field -= field.mean(axis=(1, 2), keepdims=True)
            std = field.std(axis=(1, 2), keepdims=True)
            images[start:stop] = field / np.maximum(std, np.finfo(np.float64).tiny)
            bar.update(stop - start)
    return images


def laplacian_target(images: np.ndarray) -> np.ndarray:
    """Sum over pixels of the absolute periodic 5-point Laplacian, per image.

    Parameters
    ----------
    images : numpy.ndarray
        One image ``(H, W)`` or a batch ``(n, H, W)``.

    Returns
    -------
    numpy.ndarray
        float64, shape ``()`` or ``(n,)``.
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim not in (2, 3):
        raise FieldError(f"images must have shape (H, W) or (n, H, W), got {x.shape}")
    lap = (
        np.roll(x, 1, axis=-1) + np.roll(x, -1, axis=-1)
        + np.roll(x, 1, axis=-2) + np.roll(x, -1, axis=-2)
        - 4.0 * x
    )  # fmt: skip
    return np.asarray(np.abs(lap).sum(axis=(-2, -1)), dtype=np.float64)


def laplacian_dataset(n: int, L: int = 100, *, seed: int = 0, progress: bool = False) -> xr.Dataset:
    """Smooth random images with their exact sum-of-|Laplacian| targets.

    Parameters
    ----------
    n : int
        Number of samples.
    L : int, optional
        Image side in pixels (a multiple of the focus, 10, for the default model).
    seed : int, optional
        Seed; the same seed gives the same data set.
    progress : bool, optional
        Show a tqdm progress bar.

    Returns
    -------
    xarray.Dataset
        ``image`` (``sample, y, x``; float32) and ``target`` (``sample``; float64).
    """
    images = laplacian_images(n, L, seed=seed, progress=progress)
    return xr.Dataset(
        {
            "image": (("sample", "y", "x"), images),
            "target": (("sample",), laplacian_target(images)),
        },
        attrs={
            "generator": "training.laplacian.laplacian_dataset",
            "method": "Gaussian random fields, correlation length log-uniform in [2, L/8] px",
            "L": int(L),
            "seed": int(seed),
            "target": "sum_abs_laplacian",
            "target_unit": "1",
            "boundary": "periodic",
        },
    )
