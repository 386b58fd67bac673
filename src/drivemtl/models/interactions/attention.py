"""Token attention for VTDNet's interaction blocks: multi-head attention with a key mask and the
pre-LayerNorm self- / cross-attention blocks of the paper's Eq. (2) and (3).

Token sets are batched as ``[B, N, C]`` with a boolean ``valid`` mask ``[B, N]`` (objects per
image differ in number, so sets are padded). Padded keys get no attention weight; a query whose
set of keys is empty attends to nothing and gets a zero attention output, so its residual stream
passes through unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from drivemtl.ops.window_attention import Mlp


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention ``softmax(Q K^T / sqrt(d)) V`` over `heads` heads.

    Queries, keys and values come from their own linear layers (`q`, `k`, `v`), the heads are
    merged by `proj`.
    """

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        kv_dim = dim if kv_dim is None else kv_dim
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv_dim, dim)
        self.v = nn.Linear(kv_dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)  # [B, heads, N, d]

    def forward(self, queries: Tensor, keys: Tensor, key_valid: Tensor | None = None) -> Tensor:
        """`queries` [B, Nq, C] attend to `keys` [B, Nk, Ck] (values = keys); `key_valid`
        [B, Nk] marks real keys. Returns [B, Nq, C]."""
        q, k, v = self._split(self.q(queries)), self._split(self.k(keys)), self._split(self.v(keys))
        logits = (q * self.scale) @ k.transpose(-2, -1)  # [B, heads, Nq, Nk]
        if key_valid is not None:
            # The dtype's lowest finite value, not -inf: a row without valid keys stays finite
            # (no NaN in forward or backward) and is zeroed below.
            mask = key_valid[:, None, None, :]
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        weights = logits.softmax(dim=-1)
        if key_valid is not None:
            weights = torch.where(mask, weights, 0.0)
        out = (weights @ v).transpose(1, 2).flatten(2)
        return self.proj(out)


class SelfAttentionBlock(nn.Module):
    """Pre-LN transformer block (Eq. 2): ``X' = MHA(LN X) + X; X = FFN(LN X') + X'``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """Tokens [B, N, C] (padded ones marked False in `valid` [B, N]) -> [B, N, C]."""
        normed = self.norm1(x)
        x = x + self.attn(normed, normed, valid)
        return x + self.mlp(self.norm2(x))


class CrossAttentionBlock(nn.Module):
    """Pre-LN cross-attention block (Eq. 3): queries LN(X_q), keys / values LN(X_kv);
    ``X'' = MHA + X_q; X' = FFN(LN X'') + X''``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, queries: Tensor, keys: Tensor, key_valid: Tensor | None = None) -> Tensor:
        """`queries` [B, Nq, C] updated from `keys` [B, Nk, C] -> [B, Nq, C]."""
        x = queries + self.attn(self.norm_q(queries), self.norm_kv(keys), key_valid)
        return x + self.mlp(self.norm2(x))


def pad_sets(sets: list[Tensor], like: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image token sets [Ni, C] -> padded [B, max Ni, C] and the valid mask [B, max Ni].

    `like` gives dtype and device (and C when there are no sets).
    """
    longest = max((s.shape[0] for s in sets), default=0)
    channels = sets[0].shape[-1] if sets else like.shape[-1]
    out = like.new_zeros((len(sets), longest, channels))
    valid = torch.zeros((len(sets), longest), dtype=torch.bool, device=like.device)
    for i, s in enumerate(sets):
        out[i, : s.shape[0]] = s
        valid[i, : s.shape[0]] = True
    return out, valid


def unpad_sets(padded: Tensor, sizes: list[int]) -> list[Tensor]:
    """Inverse of `pad_sets`: the first `sizes[i]` tokens of each image."""
    return [padded[i, :n] for i, n in enumerate(sizes)]


__all__ = [
    "CrossAttentionBlock",
    "MultiHeadAttention",
    "SelfAttentionBlock",
    "pad_sets",
    "unpad_sets",
]
