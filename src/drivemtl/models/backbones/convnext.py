"""ConvNeXt-T / -B (Liu et al. 2022) returning C2..C5, loading official and timm checkpoints.

The network: a 4x4 stride-4 convolution + channels-first LayerNorm stem, four stages of ConvNeXt
blocks (7x7 depthwise convolution, LayerNorm, Linear C -> 4C, GELU, Linear 4C -> C, layer scale,
stochastic depth, residual) with a LayerNorm + 2x2 stride-2 convolution between stages, and one
output LayerNorm per stage (``norm0..norm3``, as detection / segmentation backbones add).

Parameter names follow the official facebookresearch layout (``downsample_layers.{i}.{0,1}``, the
stem being ``downsample_layers.0``; ``stages.{i}.{j}.dwconv / norm / pwconv1 / pwconv2 / gamma``),
so official checkpoints load with their keys unchanged; timm's layout (``stem.*``,
``stages.{i}.downsample.*``, ``stages.{i}.blocks.{j}.conv_dw / mlp.fc1 / ...``) is renamed onto it.
Which of the two a file uses is told by its keys. ImageNet classifier parts (official ``norm`` /
``head``, timm ``head.*``) are ignored; the output norms, absent from ImageNet checkpoints, stay
at their initial values and are listed in ``left_at_init``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drivemtl.log import get_logger
from drivemtl.models.backbones.frozen import FrozenStagesMixin
from drivemtl.models.weights import WeightsError, fit_problems, read_state_dict
from drivemtl.ops.drop_path import DropPath

LOGGER = get_logger(__name__)

# Architectures of the paper: blocks per stage and channels per stage.
CONVNEXT_SPECS: dict[str, tuple[tuple[int, int, int, int], tuple[int, int, int, int]]] = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
}
LN_EPS = 1e-6  # the eps of every LayerNorm in ConvNeXt (official and timm)

CheckpointFormat = Literal["official", "timm"]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``[N, C, H, W]`` map, per pixel (channels-first)."""

    def __init__(self, channels: int, eps: float = LN_EPS) -> None:
        super().__init__(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise every pixel's channel vector: ``(x - mean) / sqrt(var + eps) * w + b``."""
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """``x + drop_path(gamma * fc2(gelu(fc1(ln(dwconv7x7(x))))))`` on a ``[N, C, H, W]`` map.

    The LayerNorm and the two Linear layers work channels-last; `layer_scale_init` <= 0 builds no
    `gamma` (as the official code does).
    """

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = (
            nn.Parameter(torch.full((dim,), float(layer_scale_init)))
            if layer_scale_init > 0
            else None
        )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        """Residual block forward."""
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.gamma is not None:
            y = y * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))


def _positive_four(name: str, values: Sequence[int]) -> tuple[int, int, int, int]:
    values = tuple(int(v) for v in values)
    if len(values) != 4 or min(values) <= 0:
        raise ValueError(f"ConvNeXt {name} must be four positive integers, got {values}")
    return values  # type: ignore[return-value]


class ConvNeXt(FrozenStagesMixin):
    """ConvNeXt feature extractor: ``forward(images [N, 3, H, W]) -> [C2, C3, C4, C5]``.

    `depths` / `dims`: blocks and channels per stage (``CONVNEXT_SPECS``); `drop_path`: the
    stochastic-depth rate of the last block, rising linearly from 0 at the first; `layer_scale_init`:
    the initial layer scale (<= 0: none); `frozen_stages` = k freezes the stem (k >= 0) and stages
    1..k with their downsampling layers (the output norms stay trainable). Outputs pass through
    ``norm0..norm3`` and lie at strides 4 / 8 / 16 / 32 (``strides``, ``out_channels``).
    """

    def __init__(
        self,
        depths: Sequence[int] = CONVNEXT_SPECS["tiny"][0],
        dims: Sequence[int] = CONVNEXT_SPECS["tiny"][1],
        drop_path: float = 0.0,
        layer_scale_init: float = 1e-6,
        frozen_stages: int = -1,
    ) -> None:
        super().__init__()
        depths = _positive_four("depths", depths)
        dims = _positive_four("dims", dims)
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"ConvNeXt drop_path must be in [0, 1), got {drop_path}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in -1..4, got {frozen_stages}")
        self.depths, self.dims, self.frozen_stages = depths, dims, frozen_stages
        stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0]))
        downsamples = [
            nn.Sequential(LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], dims[i], 2, stride=2))
            for i in range(1, 4)
        ]
        self.downsample_layers = nn.ModuleList([stem, *downsamples])
        rates = torch.linspace(0.0, drop_path, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i, (depth, dim) in enumerate(zip(depths, dims, strict=True)):
            first = sum(depths[:i])
            blocks = [ConvNeXtBlock(dim, rates[first + j], layer_scale_init) for j in range(depth)]
            self.stages.append(nn.Sequential(*blocks))
        for i, dim in enumerate(dims):
            self.add_module(f"norm{i}", LayerNorm2d(dim))
        self.out_channels: list[int] = list(dims)
        self.strides: list[int] = [4, 8, 16, 32]
        self.loaded_weights: Path | None = None  # set by load_convnext_weights
        self.left_at_init: list[str] = []  # model tensors the loaded checkpoint did not have
        self._init_weights()
        self._freeze()

    def _init_weights(self) -> None:
        """Truncated-normal (std 0.02) convolution / linear weights and zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def frozen_modules(self) -> list[nn.Module]:
        """Modules whose parameters are frozen by ``frozen_stages`` (stem first)."""
        if self.frozen_stages < 0:
            return []
        modules: list[nn.Module] = [self.downsample_layers[0]]
        for i in range(self.frozen_stages):
            if i > 0:
                modules.append(self.downsample_layers[i])
            modules.append(self.stages[i])
        return modules

    def forward(self, images: Tensor) -> list[Tensor]:
        """C2..C5, each through its output LayerNorm, finest first."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"ConvNeXt expects images [N, 3, H, W], got {tuple(images.shape)}")
        x, outputs = images, []
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
            outputs.append(getattr(self, f"norm{i}")(x))
        return outputs


# --- checkpoints -------------------------------------------------------------------------------

# timm key -> official key, for the parts the two layouts share.
_TIMM_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^stem\.([01])\.", r"downsample_layers.0.\1."),
        (r"^stages\.(\d+)\.downsample\.([01])\.", r"downsample_layers.\1.\2."),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.conv_dw\.", r"stages.\1.\2.dwconv."),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.", r"stages.\1.\2.pwconv1."),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.", r"stages.\1.\2.pwconv2."),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2."),  # norm, gamma
    )
)
# ImageNet classifier parts, never built here.
_HEAD_PREFIXES: dict[CheckpointFormat, tuple[str, ...]] = {
    "official": ("head.", "norm."),
    "timm": ("head.",),
}


def checkpoint_format(state: Mapping[str, Tensor]) -> CheckpointFormat | None:
    """The layout of `state` by its keys: official (``downsample_layers.*``) or timm (``stem.*``,
    ``stages.*.blocks.*``); None when it has neither."""
    if any(k.startswith("downsample_layers.") for k in state):
        return "official"
    if any(k.startswith("stem.") or re.match(r"stages\.\d+\.blocks\.", k) for k in state):
        return "timm"
    return None


def _timm_key(key: str) -> str:
    for pattern, replacement in _TIMM_RULES:
        if pattern.match(key):
            return pattern.sub(replacement, key, count=1)
    return key


def to_official_layout(state: Mapping[str, Tensor], fmt: CheckpointFormat) -> dict[str, Tensor]:
    """`state` with its classifier keys dropped and its keys in the official layout."""
    head = _HEAD_PREFIXES[fmt]
    kept = {k: v for k, v in state.items() if not k.startswith(head)}
    if fmt == "official":
        return kept
    renamed: dict[str, Tensor] = {}
    for key, value in kept.items():
        new_key = _timm_key(key)
        if new_key in renamed:
            raise ValueError(f"two checkpoint keys map onto {new_key!r}")
        renamed[new_key] = value
    return renamed


def load_convnext_weights(module: ConvNeXt, path: str | Path) -> list[str]:
    """Load the official or timm ConvNeXt checkpoint at `path` into `module`, strictly.

    Every model tensor must come from the file except the output norms ``norm0..norm3`` (absent
    from ImageNet checkpoints: they stay at init). Returns the model keys left at init (also kept
    in ``module.left_at_init``). Any other missing, unknown or mis-shaped tensor is a one-line
    ``WeightsError`` naming the file.
    """
    path = Path(path)
    state = read_state_dict(path)
    fmt = checkpoint_format(state)
    if fmt is None:
        first = ", ".join(list(state)[:3]) or "no tensors"
        raise WeightsError(
            f"{path}: not a ConvNeXt checkpoint: neither official keys (downsample_layers.*) "
            f"nor timm keys (stem.*, stages.*.blocks.*); it starts with {first}"
        )
    try:
        state = to_official_layout(state, fmt)
    except ValueError as error:
        raise WeightsError(f"{path}: {error}") from None
    own = module.state_dict()
    optional = [k for k in own if re.match(r"norm[0-3]\.", k)]
    left = [k for k in optional if k not in state]
    expected = {k: v for k, v in own.items() if k not in left}
    problems = fit_problems(expected, state)
    if problems:
        raise WeightsError(
            f"{path}: a checkpoint in the {fmt} layout that does not fit ConvNeXt (depths "
            f"{module.depths}, dims {module.dims}): {'; '.join(problems)}"
        )
    module.load_state_dict(state, strict=False)
    module.loaded_weights = path
    module.left_at_init = left
    if left:
        LOGGER.info("%s (%s format): %d tensors left at init: %s", path, fmt, len(left), left)
    return left
