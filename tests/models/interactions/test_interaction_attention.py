"""Token attention of the VTD interaction blocks against explicit float64 loops."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from drivemtl.models.interactions.attention import (
    CrossAttentionBlock,
    MultiHeadAttention,
    SelfAttentionBlock,
    pad_sets,
    unpad_sets,
)


def reference_attention(attn: MultiHeadAttention, queries, keys):
    """softmax(Q K^T / sqrt(d)) V per head, one query at a time; keys [Nk, C] of one set."""
    heads = attn.heads
    q, k, v = attn.q(queries), attn.k(keys), attn.v(keys)
    d = q.shape[-1] // heads
    out = torch.zeros_like(q)
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        for i in range(q.shape[0]):
            if keys.shape[0] == 0:
                continue
            logits = torch.stack([q[i, cols] @ k[j, cols] / math.sqrt(d) for j in range(len(k))])
            weights = torch.exp(logits - logits.max())
            weights = weights / weights.sum()
            out[i, cols] = (weights[:, None] * v[:, cols]).sum(0)
    return attn.proj(out)


def reference_ffn(block, x):
    return block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(x))))


def test_attention_matches_loop_with_padded_and_empty_key_sets() -> None:
    torch.manual_seed(0)
    attn = MultiHeadAttention(8, 2).double()
    queries = torch.randn(3, 4, 8, dtype=torch.float64)
    key_sets = [torch.randn(n, 8, dtype=torch.float64) for n in (5, 2, 0)]
    keys, valid = pad_sets(key_sets, queries)
    assert keys.shape == (3, 5, 8) and valid.sum(1).tolist() == [5, 2, 0]
    out = attn(queries, keys, valid)
    for b in range(3):
        expected = reference_attention(attn, queries[b], key_sets[b])
        torch.testing.assert_close(out[b], expected, rtol=1e-10, atol=1e-10)
    # No key at all: the attention output is the projection's bias only (zero weights).
    torch.testing.assert_close(out[2], attn.proj.bias.expand(4, 8))


def test_attention_gradients_stay_finite_for_an_empty_set() -> None:
    attn = MultiHeadAttention(4, 1)
    queries = torch.randn(1, 3, 4, requires_grad=True)
    keys, valid = pad_sets([torch.zeros(0, 4)], queries)
    keys = torch.cat([keys, torch.randn(1, 2, 4)], dim=1)  # padded keys that must be ignored
    valid = torch.cat([valid, torch.zeros(1, 2, dtype=torch.bool)], dim=1)
    attn(queries, keys, valid).sum().backward()
    assert torch.isfinite(queries.grad).all()


def test_self_attention_block_is_pre_layer_norm() -> None:
    torch.manual_seed(1)
    block = SelfAttentionBlock(8, 2, mlp_ratio=2.0).double()
    sets = [torch.randn(n, 8, dtype=torch.float64) for n in (3, 1)]
    x, valid = pad_sets(sets, sets[0])
    out = unpad_sets(block(x, valid), [3, 1])
    for tokens, got in zip(sets, out, strict=True):
        normed = block.norm1(tokens)
        mid = tokens + reference_attention(block.attn, normed, normed)
        torch.testing.assert_close(got, mid + reference_ffn(block, mid), rtol=1e-10, atol=1e-10)


def test_cross_attention_block_matches_eq3() -> None:
    torch.manual_seed(2)
    block = CrossAttentionBlock(8, 4).double()
    queries = torch.randn(1, 5, 8, dtype=torch.float64)
    keys = torch.randn(1, 7, 8, dtype=torch.float64)
    out = block(queries, keys)
    q = queries[0]
    mid = q + reference_attention(block.attn, block.norm_q(q), block.norm_kv(keys[0]))
    torch.testing.assert_close(out[0], mid + reference_ffn(block, mid), rtol=1e-10, atol=1e-10)
