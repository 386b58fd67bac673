"""Image-level classification head: global average pooling on C5, one linear layer per attribute."""

from __future__ import annotations

from torch import Tensor, nn

from drivemtl.models.features import IMAGE, Features, FeatureSpec


class GlobalPoolClassifier(nn.Module):
    """VTDNet's tagging decoder: GAP over the image features, then a linear layer per attribute.

    `attributes` maps an attribute name to its class count; `forward` returns a dict of
    [B, classes] logits keyed like `attributes`.
    """

    needs = (IMAGE,)

    def __init__(self, spec: FeatureSpec, attributes: dict[str, int], dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifiers = nn.ModuleDict(
            {name: nn.Linear(spec.image_channels, n) for name, n in attributes.items()}
        )

    def forward(self, features: Features, batch: object = None) -> dict[str, Tensor]:
        """Logits per attribute from the mean of C5 over space."""
        pooled = self.dropout(features.image.mean(dim=(2, 3)))
        return {name: layer(pooled) for name, layer in self.classifiers.items()}
