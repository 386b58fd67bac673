"""Global-pool classifier equals a linear layer on the spatial mean of C5."""

from __future__ import annotations

import torch

from drivemtl.models.features import Features, FeatureSpec
from drivemtl.models.heads.classification import GlobalPoolClassifier


def test_linear_on_mean_of_c5() -> None:
    spec = FeatureSpec(image_channels=4, pixel_channels=2, strides=(4,))
    head = GlobalPoolClassifier(spec, {"weather": 7, "timeofday": 4})
    c5 = torch.randn(2, 4, 3, 5)
    out = head(Features(c5, [torch.zeros(2, 2, 1, 1)], (4,), (96, 160), [(96, 160)] * 2))
    layer = head.classifiers["weather"]
    expected = c5.double().mean(dim=(2, 3)) @ layer.weight.double().T + layer.bias.double()
    assert torch.allclose(out["weather"].double(), expected, atol=1e-6)
    assert out["timeofday"].shape == (2, 4)
