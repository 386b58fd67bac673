"""The AdvEnt patch discriminator against the same layers written with F.conv2d."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from drivemtl.config.base import PluginField
from drivemtl.models.discriminators import DISCRIMINATORS


def test_the_patch_discriminator_is_strided_4x4_convs_with_leaky_relu() -> None:
    options = PluginField(DISCRIMINATORS, "patch").validate({"channels": 3, "layers": 2})
    disc = DISCRIMINATORS.get("patch")(options, 5).double()
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(5, 3), (3, 6), (6, 1)]
    x = torch.randn(2, 5, 32, 48, dtype=torch.float64)
    y = x
    for k, conv in enumerate(convs):
        y = F.conv2d(y, conv.weight, conv.bias, stride=2, padding=1)
        if k < len(convs) - 1:
            y = torch.where(y > 0, y, 0.2 * y)
    out = disc(x)
    assert out.shape == (2, 1, 4, 6)  # stride 2^(layers + 1)
    assert torch.allclose(out, y, atol=1e-12)
