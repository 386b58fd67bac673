"""A PWC-Net style optical-flow decoder on the pixel (FPN) features of a key and a reference frame.

Coarse to fine over the configured strides (default 32, 16, 8, 4): at each level the coarser
flow is upsampled (bilinear, values scaled with the stride ratio), the reference features are
warped by it, a cost volume of max displacement `d` ((2d + 1)^2 channels) is taken between the
L2-normalised key and warped reference features (cosine similarities), and a densely connected
decoder (LeakyReLU 0.1) predicts a residual flow from the cost volume, the key features and the
upsampled flow. A context network of dilated convolutions refines the finest level's flow.
Forward (key -> reference) and, in training, backward (reference -> key) flows are computed in
one pass over the stacked pair, so the criterion can estimate occlusions.

Flows are (dx, dy) in pixels of their own level; `upsample_flow` brings one to another size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drivemtl.models.features import PIXEL, REFERENCE, Features, FeatureSpec
from drivemtl.ops.correlation import correlation
from drivemtl.ops.warp import warp_by_flow
from drivemtl.structures.batch import Batch

NEGATIVE_SLOPE = 0.1


@dataclass
class FlowOutputs:
    """Per-level flows, coarse to fine, each [B, 2, h, w] in pixels of its level.

    forward: key -> reference (None without reference features); backward: reference -> key
    (training only); strides: each level's stride; input_size: the padded input (H, W).
    """

    forward: list[Tensor] | None
    backward: list[Tensor] | None
    strides: tuple[int, ...]
    input_size: tuple[int, int]

    @property
    def finest(self) -> Tensor | None:
        """The finest forward flow (None without reference features)."""
        return None if self.forward is None else self.forward[-1]


def upsample_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """[B, 2, h, w] flow resized to `size` (bilinear), vectors scaled by the resize factors."""
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    scale = out.new_tensor([size[1] / w, size[0] / h]).view(1, 2, 1, 1)
    return out * scale


def level_cost(key: Tensor, reference: Tensor, flow: Tensor, max_displacement: int) -> Tensor:
    """[B, (2d+1)^2, h, w] cosine similarities between the key features and the reference
    features warped by `flow` (both L2-normalised over channels after warping), displacement
    (dy, dx) in dy-major order."""
    warped = warp_by_flow(reference, flow)
    key_n, warped_n = F.normalize(key, dim=1), F.normalize(warped, dim=1)
    return correlation(key_n, warped_n, max_displacement) * key.shape[1]


def _conv(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation),
        nn.LeakyReLU(NEGATIVE_SLOPE),
    )


class DenseFlowDecoder(nn.Module):
    """PWC-Net's densely connected estimator: each conv's output is concatenated to its input;
    a last 3x3 conv predicts the residual flow. `out_channels` is the final feature width."""

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.convs.append(_conv(channels, width))
            channels += width
        self.out_channels = channels
        self.flow = nn.Conv2d(channels, 2, 3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(residual flow [B, 2, h, w], dense features [B, out_channels, h, w])."""
        for conv in self.convs:
            x = torch.cat((x, conv(x)), dim=1)
        return self.flow(x), x


class ContextNetwork(nn.Module):
    """Dilated 3x3 convs (LeakyReLU 0.1) over the decoder features and the flow -> residual."""

    def __init__(self, in_channels: int, widths: Sequence[int], dilations: Sequence[int]) -> None:
        super().__init__()
        if len(widths) != len(dilations):
            raise ValueError(f"context widths {list(widths)} and dilations {list(dilations)} "
                             "must have the same length")  # fmt: skip
        layers: list[nn.Module] = []
        channels = in_channels
        for width, dilation in zip(widths, dilations, strict=True):
            layers.append(_conv(channels, width, dilation))
            channels = width
        layers.append(nn.Conv2d(channels, 2, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class PWCFlowHead(nn.Module):
    """Coarse-to-fine flow between a batch and its reference frames (see the module docstring).

    Needs the reference stream, also at inference (`reference_at_inference`): without reference
    features the outputs carry no flow.
    """

    needs = (PIXEL, REFERENCE)
    reference_at_inference = True

    def __init__(
        self,
        spec: FeatureSpec,
        strides: Sequence[int] = (32, 16, 8, 4),
        max_displacement: int = 4,
        decoder_widths: Sequence[int] = (128, 128, 96, 64, 32),
        context_widths: Sequence[int] = (128, 128, 128, 96, 64, 32),
        context_dilations: Sequence[int] = (1, 2, 4, 8, 16, 1),
    ) -> None:
        super().__init__()
        strides = tuple(int(s) for s in strides)
        missing = [s for s in strides if s not in spec.strides]
        if (
            missing
            or list(strides) != sorted(strides, reverse=True)
            or len(set(strides)) != len(strides)
        ):
            raise ValueError(f"pwc_flow strides {list(strides)} must be distinct pixel-feature "
                             f"strides (have {list(spec.strides)}), coarse to fine")  # fmt: skip
        self.strides = strides
        self.max_displacement = int(max_displacement)
        cost = (2 * self.max_displacement + 1) ** 2
        in_channels = cost + spec.pixel_channels + 2
        self.decoders = nn.ModuleList(DenseFlowDecoder(in_channels, decoder_widths)
                                      for _ in strides)  # fmt: skip
        self.context = ContextNetwork(
            self.decoders[-1].out_channels + 2, context_widths, context_dilations
        )

    def pyramid(self, key: list[Tensor], reference: list[Tensor]) -> list[Tensor]:
        """Flows key -> reference per level (coarse to fine) from per-level features."""
        flows: list[Tensor] = []
        flow: Tensor | None = None
        for i, (k, r) in enumerate(zip(key, reference, strict=True)):
            if flow is None:
                flow = k.new_zeros((k.shape[0], 2, *k.shape[-2:]))
            else:
                flow = upsample_flow(flow, tuple(k.shape[-2:]))
            cost = F.leaky_relu(level_cost(k, r, flow, self.max_displacement), NEGATIVE_SLOPE)
            residual, dense = self.decoders[i](torch.cat((cost, k, flow), dim=1))
            flow = flow + residual
            if i == len(key) - 1:
                flow = flow + self.context(torch.cat((dense, flow), dim=1))
            flows.append(flow)
        return flows

    def forward(self, features: Features, batch: Batch | None = None) -> FlowOutputs:
        """Forward flows (and backward ones when `batch` is given, i.e. in training)."""
        ref = features.reference
        if ref is None:
            return FlowOutputs(None, None, self.strides, features.input_size)
        key_maps, ref_maps = features.levels(self.strides), ref.levels(self.strides)
        for k, r in zip(key_maps, ref_maps, strict=True):
            if k.shape != r.shape:
                raise ValueError(f"pwc_flow: key features {tuple(k.shape)} and reference features "
                                 f"{tuple(r.shape)} differ (frames of one clip must have one "
                                 "size)")  # fmt: skip
        if batch is None:
            return FlowOutputs(self.pyramid(key_maps, ref_maps), None, self.strides,
                               features.input_size)  # fmt: skip
        n = key_maps[0].shape[0]
        both = self.pyramid(
            [torch.cat((k, r)) for k, r in zip(key_maps, ref_maps, strict=True)],
            [torch.cat((r, k)) for k, r in zip(key_maps, ref_maps, strict=True)],
        )
        return FlowOutputs([f[:n] for f in both], [f[n:] for f in both], self.strides,
                           features.input_size)  # fmt: skip
