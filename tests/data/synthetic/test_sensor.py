"""The camera model after the renderer: PSF blur against a float64 Gaussian, read noise
statistics, identity at zero, bad parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivemtl.data.synthetic.sensor import SensorModel


def test_zero_blur_and_noise_leave_the_image_as_rendered() -> None:
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    model = SensorModel()
    assert model.identity and model.apply(image, np.random.default_rng(1)) is image


def test_blur_spreads_an_impulse_as_a_sampled_gaussian() -> None:
    sigma = 0.8
    image = np.zeros((15, 15, 3), np.uint8)
    image[7, 7] = 255
    out = SensorModel(blur=sigma).apply(image, np.random.default_rng(0)).astype(np.float64)
    # OpenCV's float kernel: 2 * round(4 sigma) + 1 taps of exp(-i^2 / 2 sigma^2), normalised.
    taps = np.arange(-3, 4, dtype=np.float64)
    kernel = np.exp(-(taps**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    expected = 255 * np.outer(kernel, kernel)
    np.testing.assert_allclose(out[4:11, 4:11, 0], np.rint(expected), atol=1)
    assert out[..., 0].sum() == pytest.approx(255, abs=8)  # energy kept (up to rounding)
    flat = np.full((9, 9, 3), 77, np.uint8)
    np.testing.assert_array_equal(SensorModel(blur=sigma).apply(flat, None), flat)  # type: ignore[arg-type]


def test_read_noise_has_the_set_deviation_and_differs_per_stream() -> None:
    flat = np.full((96, 96, 3), 128, np.uint8)
    model = SensorModel(noise=1.5)
    a = model.apply(flat, np.random.default_rng(0)).astype(np.float64)
    b = model.apply(flat, np.random.default_rng(1)).astype(np.float64)
    # Quantised Gaussian: variance sigma^2 + 1/12 (rounding), mean kept.
    assert a.mean() == pytest.approx(128, abs=0.05)
    assert a.std() == pytest.approx(math.sqrt(1.5**2 + 1 / 12), rel=0.05)
    assert (a == b).mean() < 0.4
    np.testing.assert_array_equal(a, model.apply(flat, np.random.default_rng(0)))


def test_negative_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        SensorModel(blur=-1.0)
