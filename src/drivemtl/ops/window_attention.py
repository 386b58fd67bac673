"""Window self-attention (Swin Transformer, Liu et al. 2021) for feature maps of any size.

Maps are channels-last, ``[B, H, W, C]``. A map is padded to whole ``ws x ws`` windows
(`pad_to_windows`), cut into windows (`window_partition`), attended within each window with a
learned relative position bias (`WindowAttention`) and put back (`window_reverse`). `SwinBlock`
is Swin's pre-norm block: (shifted) window attention and an MLP, each with a residual.

Padding follows the Swin detection / segmentation backbones: the map is zero-padded after the
first LayerNorm, the padded tokens take part in the (unshifted) window attention, and the padding
is cropped before the residual, so the output has the input's size. The shifted-window mask is
computed on the padded size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drivemtl.ops.drop_path import DropPath

# Swin's additive mask value for token pairs from different regions of the shifted map.
MASK_VALUE = -100.0


def window_partition(x: Tensor, ws: int) -> Tensor:
    """Cut ``x [B, H, W, C]`` (H, W multiples of `ws`) into windows ``[B * nW, ws, ws, C]``.

    Windows are ordered image by image, then row-major over the window grid.
    """
    b, h, w, c = x.shape
    if h % ws or w % ws:
        raise ValueError(f"window_partition: map {h}x{w} is not a multiple of window {ws}")
    x = x.reshape(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, c)


def window_reverse(windows: Tensor, ws: int, h: int, w: int) -> Tensor:
    """Inverse of `window_partition`: windows ``[B * nW, ws, ws, C]`` -> map ``[B, H, W, C]``."""
    num_windows = (h // ws) * (w // ws)
    if h % ws or w % ws or windows.shape[0] % num_windows:
        raise ValueError(
            f"window_reverse: {windows.shape[0]} windows of {ws} do not tile a {h}x{w} map"
        )
    b = windows.shape[0] // num_windows
    x = windows.reshape(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


def pad_to_windows(x: Tensor, ws: int) -> tuple[Tensor, tuple[int, int]]:
    """Zero-pad ``x [B, H, W, C]`` at the bottom / right to multiples of `ws`.

    Returns the padded map and ``(pad_h, pad_w)``.
    """
    h, w = x.shape[1:3]
    pad_h, pad_w = (-h) % ws, (-w) % ws
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x, (pad_h, pad_w)


def shifted_window_mask(
    h: int, w: int, ws: int, shift: int, device: torch.device | str | None = None
) -> Tensor:
    """Additive attention mask ``[nW, ws*ws, ws*ws]`` for a map cyclically shifted by `shift`.

    The shifted ``h x w`` map (multiples of `ws`) is split into regions by the slices
    ``[0, -ws)``, ``[-ws, -shift)``, ``[-shift, end)`` along each axis; a query and a key of one
    window that come from different regions get ``-100`` (Swin's value), others 0.
    """
    if h % ws or w % ws:
        raise ValueError(f"shifted_window_mask: map {h}x{w} is not a multiple of window {ws}")
    if not 0 < shift < ws:
        raise ValueError(f"shifted_window_mask: shift must be in 1..{ws - 1}, got {shift}")
    regions = torch.zeros(1, h, w, 1, device=device)
    slices = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    label = 0
    for rows in slices:
        for cols in slices:
            regions[:, rows, cols, :] = label
            label += 1
    ids = window_partition(regions, ws).view(-1, ws * ws)
    different = ids[:, None, :] != ids[:, :, None]
    return torch.zeros(different.shape, device=device).masked_fill(different, MASK_VALUE)


def relative_position_index(ws: int) -> Tensor:
    """``[ws*ws, ws*ws]`` index into a ``(2ws-1)^2`` bias table for each query / key pair.

    Row-major token order; the index of offset ``(dy, dx)`` is ``(dy + ws-1) * (2ws-1) + dx + ws-1``.
    """
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
    coords = coords.flatten(1)  # [2, N]
    offsets = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return offsets[..., 0] * (2 * ws - 1) + offsets[..., 1]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a relative position bias (Swin).

    Parameter names follow the official Swin release: ``qkv``, ``proj``,
    ``relative_position_bias_table`` ``[(2ws-1)^2, heads]`` and the ``relative_position_index``
    buffer ``[ws*ws, ws*ws]``.
    """

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"WindowAttention: dim {dim} is not divisible by {num_heads} heads")
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> Tensor:
        """The bias ``[heads, N, N]`` added to every window's attention logits."""
        n = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, windows: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attend within each window.

        `windows` is ``[B * nW, N, C]`` with ``N = ws*ws``; `mask` (optional) is
        ``[nW, N, N]`` added to the logits of the windows of every image.
        """
        bw, n, c = windows.shape
        if n != self.window_size**2 or c != self.dim:
            raise ValueError(
                f"WindowAttention(dim {self.dim}, window {self.window_size}) got windows "
                f"{tuple(windows.shape)}"
            )
        qkv = self.qkv(windows).view(bw, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B*nW, heads, N, d]
        logits = (q * self.scale) @ k.transpose(-2, -1) + self.position_bias().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            if bw % nw:
                raise ValueError(
                    f"WindowAttention: {bw} windows do not split into {nw}-window maps"
                )
            logits = logits.view(bw // nw, nw, self.num_heads, n, n) + mask[None, :, None].to(
                logits.dtype
            )
            logits = logits.view(bw, self.num_heads, n, n)
        out = logits.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    """Two linear layers with a GELU between (``fc1``, ``fc2`` as in Swin)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``fc2(gelu(fc1(x)))``."""
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """Swin Transformer block on ``[B, H, W, C]`` maps of any size.

    ``x + drop_path(attn(norm1(x)))`` with (shifted) window attention, then
    ``x + drop_path(mlp(norm2(x)))``. With ``shift > 0`` the padded map is rolled by ``-shift``,
    attended with `shifted_window_mask`, and rolled back.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift: int = 0,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= shift < window_size:
            raise ValueError(f"SwinBlock: shift must be in 0..{window_size - 1}, got {shift}")
        self.window_size = window_size
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _attend(self, x: Tensor) -> Tensor:
        """Window attention over ``x [B, H, W, C]`` (already normalised); same size out."""
        h, w, c = x.shape[1:]
        ws = self.window_size
        x, (pad_h, pad_w) = pad_to_windows(x, ws)
        hp, wp = h + pad_h, w + pad_w
        mask = None
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
            mask = shifted_window_mask(hp, wp, ws, self.shift, device=x.device)
        windows = window_partition(x, ws).reshape(-1, ws * ws, c)
        windows = self.attn(windows, mask).reshape(-1, ws, ws, c)
        x = window_reverse(windows, ws, hp, wp)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        return x[:, :h, :w, :]

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to ``x [B, H, W, C]``."""
        if x.dim() != 4:
            raise ValueError(f"SwinBlock expects [B, H, W, C] maps, got {tuple(x.shape)}")
        x = x + self.drop_path(self._attend(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
