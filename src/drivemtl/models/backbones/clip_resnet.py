"""CLIP's ResNet image encoder ("ModifiedResNet", Radford et al. 2021) as a C2..C5 backbone.

Differences from the torchvision ResNet (``resnet.py``): a stem of three 3x3 convolutions
(3 -> w/2 stride 2, w/2 -> w/2, w/2 -> w, each with BN + ReLU) followed by a 2x2 average pool;
bottlenecks that downsample with an average pool of the stride before ``conv3`` (the convolutions
themselves never stride); a shortcut of average pool, 1x1 convolution, BN; and an attention-pooling
head (``attnpool``) that turns C5 into the CLIP image embedding (``embed``).

Parameter names and shapes equal OpenAI's ``visual.*`` keys with the prefix stripped (``conv1``,
``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0`` / ``.1``, ``attnpool.q_proj``, ...), so a
released checkpoint (a TorchScript archive or a plain state dict) loads strictly through
``load_clip_resnet``, which infers the architecture (RN50, RN101, RN50x4, ...) from the tensors.

Input normalisation: CLIP was trained on RGB images in 0..1 normalised with ``CLIP_MEAN`` /
``CLIP_STD``. In DriveMTL normalisation belongs to the data config (``data.transforms.mean`` /
``std``, in 0..255 units); use ``CLIP_MEAN_255`` / ``CLIP_STD_255`` there with these weights.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drivemtl.models.backbones.frozen import FrozenStagesMixin
from drivemtl.models.backbones.resnet import make_norm
from drivemtl.models.weights import WeightsError, fit_problems, read_state_dict

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_MEAN_255 = tuple(255.0 * m for m in CLIP_MEAN)
CLIP_STD_255 = tuple(255.0 * s for s in CLIP_STD)
CLIP_NORMS = ("bn", "frozen_bn")
VISUAL_PREFIX = "visual."


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False)


class CLIPBottleneck(nn.Module):
    """1x1 reduce, 3x3, average pool of the stride, 1x1 expand (x4), with an anti-aliased shortcut.

    The shortcut (when the stride or the channels change) is ``downsample``: children ``-1``
    (average pool), ``0`` (1x1 conv) and ``1`` (BN), named as in OpenAI's checkpoints.
    """

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, norm: str = "bn") -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = _conv(in_ch, planes, 1)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = _conv(planes, planes, 3)
        self.bn2 = make_norm(norm, planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = _conv(planes, out_ch, 1)
        self.bn3 = make_norm(norm, out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", _conv(in_ch, out_ch, 1)),
                        ("1", make_norm(norm, out_ch)),
                    ]
                )
            )

    def forward(self, x: Tensor) -> Tensor:
        """Residual block forward."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return self.relu(out + identity)


class AttentionPool2d(nn.Module):
    """Multi-head attention of the mean token over [mean token, every C5 position] -> one vector.

    ``positional_embedding`` is [spatial_dim**2 + 1, embed_dim] (the mean token's first); an input
    grid other than ``spatial_dim`` x ``spatial_dim`` gets the spatial part resized bicubically.
    """

    def __init__(self, spatial_dim: int, embed_dim: int, num_heads: int, output_dim: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by {num_heads} heads")
        self.spatial_dim = spatial_dim
        self.num_heads = num_heads
        self.positional_embedding = nn.Parameter(
            torch.randn(spatial_dim**2 + 1, embed_dim) / embed_dim**0.5
        )
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        for linear in (self.q_proj, self.k_proj, self.v_proj, self.c_proj):
            nn.init.normal_(linear.weight, std=embed_dim**-0.5)  # OpenAI's initialisation

    def positional_embedding_for(self, height: int, width: int) -> Tensor:
        """The positional embedding for a ``height`` x ``width`` grid, [height*width + 1, C]."""
        pos = self.positional_embedding
        side = self.spatial_dim
        if (height, width) == (side, side):
            return pos
        channels = pos.shape[1]
        grid = pos[1:].reshape(1, side, side, channels).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
        return torch.cat([pos[:1], grid.reshape(channels, height * width).t()])

    def forward(self, x: Tensor) -> Tensor:
        """Pool a feature map [N, C, H, W] into embeddings [N, output_dim]."""
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # [N, HW, C], row-major positions
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        tokens = tokens + self.positional_embedding_for(h, w).to(tokens.dtype)
        heads, head_dim = self.num_heads, c // self.num_heads
        q = self.q_proj(tokens[:, :1]).view(n, 1, heads, head_dim).transpose(1, 2)
        k = self.k_proj(tokens).view(n, -1, heads, head_dim).transpose(1, 2)
        v = self.v_proj(tokens).view(n, -1, heads, head_dim).transpose(1, 2)
        weights = (q @ k.transpose(-2, -1) * head_dim**-0.5).softmax(dim=-1)  # [N, heads, 1, L]
        pooled = (weights @ v).transpose(1, 2).reshape(n, c)
        return self.c_proj(pooled)


class ModifiedResNet(FrozenStagesMixin):
    """CLIP's ResNet image tower: ``forward(images) -> [C2, C3, C4, C5]``, ``embed(images)``.

    ``layers`` are the blocks per stage ((3, 4, 6, 3) = RN50), ``width`` the stem width (C2..C5
    have 4, 8, 16, 32 times as many channels), ``output_dim`` / ``heads`` / ``input_resolution``
    configure the attention pooling (its positional grid is ``input_resolution // 32`` square).
    ``frozen_stages`` = k freezes the stem (k >= 0) and stages 1..k (kept in eval mode);
    ``norm`` is "bn" or "frozen_bn". ``loaded_weights`` is the checkpoint loaded, if any.
    """

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        width: int = 64,
        output_dim: int = 1024,
        heads: int = 32,
        input_resolution: int = 224,
        frozen_stages: int = -1,
        norm: str = "bn",
    ) -> None:
        super().__init__()
        layers = tuple(int(n) for n in layers)
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be 4 positive block counts, got {layers}")
        if width <= 0 or width % 2:
            raise ValueError(f"width must be a positive even number, got {width}")
        if input_resolution <= 0 or input_resolution % 32:
            raise ValueError(f"input_resolution must be a multiple of 32, got {input_resolution}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in -1..4, got {frozen_stages}")
        if norm not in CLIP_NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {CLIP_NORMS}")
        self.layers = layers
        self.width = width
        self.output_dim = output_dim
        self.heads = heads
        self.input_resolution = input_resolution
        self.frozen_stages = frozen_stages
        self.loaded_weights = None  # Path of the checkpoint loaded (set by load_clip_resnet)
        self.conv1 = _conv(3, width // 2, 3, stride=2)
        self.bn1 = make_norm(norm, width // 2)
        self.conv2 = _conv(width // 2, width // 2, 3)
        self.bn2 = make_norm(norm, width // 2)
        self.conv3 = _conv(width // 2, width, 3)
        self.bn3 = make_norm(norm, width)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        in_ch = width
        for index, blocks in enumerate(layers):
            planes, stride = width * 2**index, 1 if index == 0 else 2
            stage = [CLIPBottleneck(in_ch, planes, stride, norm)]
            in_ch = planes * CLIPBottleneck.expansion
            stage += [CLIPBottleneck(in_ch, planes, 1, norm) for _ in range(blocks - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
        self.attnpool = AttentionPool2d(input_resolution // 32, in_ch, heads, output_dim)
        self.out_channels = [width * 4 * 2**i for i in range(4)]
        self.strides = [4, 8, 16, 32]
        self._freeze()

    def frozen_modules(self) -> list[nn.Module]:
        """Modules whose parameters are frozen by ``frozen_stages`` (stem first)."""
        if self.frozen_stages < 0:
            return []
        modules: list[nn.Module] = [self.conv1, self.bn1, self.conv2, self.bn2]
        modules += [self.conv3, self.bn3]
        modules += [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]
        return modules

    def stem(self, images: Tensor) -> Tensor:
        """The three-convolution stem and 2x2 average pool (stride 4)."""
        x = self.relu(self.bn1(self.conv1(images)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        return self.avgpool(x)

    def forward(self, images: Tensor) -> list[Tensor]:
        """C2..C5 feature maps (strides 4, 8, 16, 32), finest first."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"ModifiedResNet expects images [N, 3, H, W], got {list(images.shape)}"
            )
        c2 = self.layer1(self.stem(images))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c2, c3, c4, self.layer4(c4)]

    @torch.jit.export
    def embed(self, images: Tensor) -> Tensor:
        """The CLIP image embedding [N, output_dim]: C5 through the attention pooling."""
        return self.attnpool(self.forward(images)[-1])


# -- checkpoints -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CLIPVisualArchitecture:
    """The ModifiedResNet hyper-parameters that a checkpoint's tensor shapes determine."""

    layers: tuple[int, int, int, int]
    width: int
    output_dim: int
    heads: int
    input_resolution: int


def clip_visual_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The ``visual.`` part of a whole CLIP state dict, prefix stripped (text keys dropped)."""
    n = len(VISUAL_PREFIX)
    return {k[n:]: v for k, v in state.items() if k.startswith(VISUAL_PREFIX)}


def _not_modified_resnet(state: Mapping[str, Tensor], visual: Mapping[str, Tensor]) -> str | None:
    """Why `state` is not a CLIP ModifiedResNet checkpoint at all, or None."""
    if any(k.startswith("transformer.") for k in visual) or "class_embedding" in visual:
        return "no visual.layer1.*; a ViT CLIP has visual.transformer.*"
    if not visual:
        hint = ""
        if any(k.startswith("layer1.") for k in state):
            hint = "; a torchvision-style ResNet has layer1.* without the visual. prefix"
        return f"no visual.* tensors{hint}"
    if not any(k.startswith("layer1.") for k in visual):
        return "no visual.layer1.*"
    return None


def infer_architecture(
    state: Mapping[str, Tensor], heads: int | None = None
) -> CLIPVisualArchitecture:
    """The architecture of a whole CLIP state dict (``visual.*`` keys) from its tensor shapes.

    Blocks per stage are counted from the ``layer{i}.{j}`` keys; width = 2 x the output channels
    of ``conv1``; output_dim from ``attnpool.c_proj``; input_resolution = 32 x the side of the
    positional grid. Shapes do not determine the heads: `heads` when given, else OpenAI's rule
    width * 32 // 64. Raises ``ValueError`` with a one-line reason.
    """
    visual = clip_visual_state(state)
    reason = _not_modified_resnet(state, visual)
    if reason:
        raise ValueError(f"not a CLIP ModifiedResNet checkpoint ({reason})")
    required = ["conv1.weight", "attnpool.positional_embedding", "attnpool.c_proj.weight"]
    required += [f"layer{i}.0.conv1.weight" for i in range(1, 5)]
    absent = [VISUAL_PREFIX + k for k in required if k not in visual]
    if absent:
        raise ValueError(f"incomplete CLIP ModifiedResNet checkpoint: {', '.join(absent)} missing")
    layers = tuple(
        len({k.split(".")[1] for k in visual if k.startswith(f"layer{i}.")}) for i in range(1, 5)
    )
    width = 2 * visual["conv1.weight"].shape[0]
    tokens = visual["attnpool.positional_embedding"].shape[0] - 1
    side = math.isqrt(max(tokens, 0))
    if side < 1 or side * side != tokens:
        raise ValueError(
            f"visual.attnpool.positional_embedding has {tokens + 1} rows, not a square grid + 1"
        )
    return CLIPVisualArchitecture(
        layers=layers,  # type: ignore[arg-type]
        width=width,
        output_dim=visual["attnpool.c_proj.weight"].shape[0],
        heads=heads if heads is not None else width * 32 // 64,
        input_resolution=32 * side,
    )


def load_clip_visual_state(module: ModifiedResNet, visual: Mapping[str, Tensor]) -> None:
    """Load a stripped visual state dict into `module` strictly (ValueError naming the problems).

    ``num_batches_tracked`` may be present or absent on either side (frozen BN has none).
    """
    own = module.state_dict()
    state = {k: v for k, v in visual.items() if k in own or not k.endswith("num_batches_tracked")}
    problems = fit_problems(own, state)
    if problems:
        raise ValueError("; ".join(problems))
    module.load_state_dict(state, strict=False)


def _differs(wanted: object, found: object) -> bool:
    if isinstance(wanted, Sequence) and not isinstance(wanted, str):
        return tuple(wanted) != found
    return wanted != found


def load_clip_resnet(
    path: str | Path,
    frozen_stages: int = -1,
    norm: str = "bn",
    heads: int | None = None,
    expect: Mapping[str, object] | None = None,
) -> ModifiedResNet:
    """A ModifiedResNet built from and loaded with the CLIP checkpoint at `path`, strictly.

    `path` is an OpenAI TorchScript archive or a plain state dict (``visual.*`` keys; text keys
    are ignored). `expect` holds architecture values the caller asked for (``layers``,
    ``width``, ...): a checkpoint that disagrees is an error. Every error is a one-line
    ``WeightsError`` naming the file.
    """
    path = Path(path)
    state = read_state_dict(path, torchscript=True)
    try:
        arch = infer_architecture(state, heads)
    except ValueError as error:
        raise WeightsError(f"{path}: {error}") from None
    for name, wanted in (expect or {}).items():
        found = getattr(arch, name)
        if _differs(wanted, found):
            raise WeightsError(
                f"{path}: the checkpoint has {name} {found}, the options ask for {wanted}"
            )
    module = ModifiedResNet(
        arch.layers, arch.width, arch.output_dim, arch.heads, arch.input_resolution,
        frozen_stages=frozen_stages, norm=norm,
    )  # fmt: skip
    try:
        load_clip_visual_state(module, clip_visual_state(state))
    except ValueError as error:
        raise WeightsError(
            f"{path}: does not fit a CLIP ModifiedResNet (layers {arch.layers}, width "
            f"{arch.width}): {error}"
        ) from None
    module.loaded_weights = path
    return module
