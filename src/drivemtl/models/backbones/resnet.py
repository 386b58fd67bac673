"""ResNet-18/34/50/101 (He et al. 2016) returning C2..C5, state-dict compatible with torchvision.

Parameter and buffer names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ...)
and shapes equal torchvision's, so an ImageNet checkpoint loads with ``strict=True`` once its
classifier ``fc.*`` is dropped (``load_weights`` does so via ``checkpoint_ignore_prefixes``). Bottleneck
blocks stride in the 3x3 convolution ("ResNet v1.5"), as torchvision does.

``dilation=True`` replaces the last stage's stride by dilation (output stride 16, as DeepLab and
DenseMTL use), with torchvision's ``replace_stride_with_dilation=[False, False, True]`` semantics:
layer4's first block and its shortcut run at stride 1 with the previous dilation (1), every later
block dilates its 3x3 convolutions by 2 (padding 2). No parameter changes name or shape, so the
same checkpoints load. BasicBlocks (ResNet-18/34), which torchvision does not dilate, dilate both
3x3 convolutions of those later blocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from drivemtl.models.backbones.frozen import FrozenStagesMixin

NORMS = ("bn", "frozen_bn", "gn")


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, all stored as buffers.

    Standard for detection fine-tuning with small per-GPU batches; same state-dict keys as
    ``nn.BatchNorm2d`` minus ``num_batches_tracked`` (dropped silently when a checkpoint has it).
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the frozen affine normalisation ``(x - mean) / sqrt(var + eps) * w + b``."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer by name: "bn", "frozen_bn" or "gn" (32 groups, fewer if channels < 32)."""
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "frozen_bn":
        return FrozenBatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or projected) shortcut; ResNet-18/34."""

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        norm: str,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, planes, stride, dilation)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = _conv3x3(planes, planes, dilation=dilation)
        self.bn2 = make_norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Residual block forward."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4) with a shortcut; ResNet-50/101."""

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        norm: str,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_ch, planes)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = make_norm(norm, planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = make_norm(norm, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Residual block forward."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


SPECS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(FrozenStagesMixin):
    """ResNet feature extractor: ``forward(images [N, 3, H, W]) -> [C2, C3, C4, C5]`` (selected).

    ``out_levels`` picks levels among 2..5 (stride ``2**level``); ``frozen_stages`` = k freezes the
    stem (k >= 0) and stages 1..k (parameters fixed, their BatchNorm kept in eval mode); ``width``
    scales every stage (64 = standard; 16 makes a tiny, fast model for tests and demos);
    ``dilation`` dilates the last stage instead of striding it (C5 at stride 16, see the module
    docstring). ``out_channels`` / ``strides`` describe the returned maps.
    """

    # load_weights drops these checkpoint keys: torchvision's ImageNet classifier is not built here.
    checkpoint_ignore_prefixes: tuple[str, ...] = ("fc.",)

    def __init__(
        self,
        depth: int = 50,
        out_levels: Sequence[int] = (2, 3, 4, 5),
        frozen_stages: int = -1,
        norm: str = "bn",
        width: int = 64,
        zero_init_residual: bool = False,
        dilation: bool = False,
    ) -> None:
        super().__init__()
        if depth not in SPECS:
            raise ValueError(f"ResNet depth must be one of {sorted(SPECS)}, got {depth}")
        levels = tuple(int(level) for level in out_levels)
        if not levels or list(levels) != sorted(set(levels)) or not set(levels) <= {2, 3, 4, 5}:
            raise ValueError(f"out_levels must be increasing levels among 2..5, got {out_levels}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in -1..4, got {frozen_stages}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        block, blocks_per_stage = SPECS[depth]
        self.depth = depth
        self.out_levels = levels
        self.frozen_stages = frozen_stages
        self.dilation = dilation
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(norm, width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = width
        stage_channels = []
        for index, num_blocks in enumerate(blocks_per_stage):
            planes = width * 2**index
            stride = 1 if index == 0 else 2
            dilate = dilation and index == len(blocks_per_stage) - 1
            layer, in_ch = self._make_stage(block, in_ch, planes, num_blocks, stride, norm, dilate)
            self.add_module(f"layer{index + 1}", layer)
            stage_channels.append(in_ch)
        stage_strides = [4, 8, 16, 16 if dilation else 32]
        self.out_channels: list[int] = [stage_channels[level - 2] for level in levels]
        self.strides: list[int] = [stage_strides[level - 2] for level in levels]
        self._init_weights(zero_init_residual)
        self._freeze()

    @staticmethod
    def _make_stage(
        block: type[BasicBlock] | type[Bottleneck],
        in_ch: int,
        planes: int,
        num_blocks: int,
        stride: int,
        norm: str,
        dilate: bool = False,
    ) -> tuple[nn.Sequential, int]:
        """One stage; with `dilate` its stride becomes a dilation of the blocks after the first
        (torchvision's rule: the first block keeps the previous dilation, 1 here)."""
        out_ch = planes * block.expansion
        later_dilation = stride if dilate else 1
        stride = 1 if dilate else stride
        downsample = None
        if stride != 1 or in_ch != out_ch:
            downsample = nn.Sequential(_conv1x1(in_ch, out_ch, stride), make_norm(norm, out_ch))
        blocks = [block(in_ch, planes, stride, downsample, norm)]
        blocks += [
            block(out_ch, planes, 1, None, norm, later_dilation) for _ in range(num_blocks - 1)
        ]
        return nn.Sequential(*blocks), out_ch

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                last = getattr(module, "bn3", None) or getattr(module, "bn2", None)
                if isinstance(module, BasicBlock | Bottleneck) and last is not None:
                    if isinstance(last, FrozenBatchNorm2d):
                        last.weight.zero_()
                    else:
                        nn.init.zeros_(last.weight)

    def frozen_modules(self) -> list[nn.Module]:
        """Modules whose parameters are frozen by ``frozen_stages`` (stem first)."""
        if self.frozen_stages < 0:
            return []
        modules: list[nn.Module] = [self.conv1, self.bn1]
        modules += [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]
        return modules

    def forward(self, images: Tensor) -> list[Tensor]:
        """Feature maps of the requested levels, finest first."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"ResNet expects images [N, 3, H, W], got {tuple(images.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        outputs = []
        for level in range(2, max(self.out_levels) + 1):
            x = getattr(self, f"layer{level - 1}")(x)
            if level in self.out_levels:
                outputs.append(x)
        return outputs
