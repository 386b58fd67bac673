"""Window partition / reverse, shifted-window masks, window attention and the Swin block, checked
against by-hand values and slow float64 references written from Swin's definition."""

from __future__ import annotations

import math

import pytest
import torch

from drivemtl.ops.window_attention import (
    SwinBlock,
    WindowAttention,
    pad_to_windows,
    shifted_window_mask,
    window_partition,
    window_reverse,
)


def coordinate_map(b: int, h: int, w: int) -> torch.Tensor:
    """[b, h, w, 3] map whose channels are (image, row, column)."""
    grid = torch.stack(
        torch.meshgrid(torch.arange(b), torch.arange(h), torch.arange(w), indexing="ij"), -1
    )
    return grid.float()


def test_partition_by_hand_and_round_trip():
    x = coordinate_map(2, 6, 9)
    windows = window_partition(x, 3)
    assert windows.shape == (2 * 2 * 3, 3, 3, 3)
    # Window k: image k // 6, window row (k % 6) // 3, window column k % 3, row-major inside.
    for k in range(windows.shape[0]):
        b, wr, wc = k // 6, (k % 6) // 3, k % 3
        for i in range(3):
            for j in range(3):
                assert windows[k, i, j].tolist() == [b, wr * 3 + i, wc * 3 + j]
    assert torch.equal(window_reverse(windows, 3, 6, 9), x)
    with pytest.raises(ValueError, match="multiple"):
        window_partition(x, 4)


def test_pad_to_windows():
    x = torch.randn(2, 5, 7, 4)
    padded, pads = pad_to_windows(x, 4)
    assert pads == (3, 1)
    assert padded.shape == (2, 8, 8, 4)
    assert torch.equal(padded[:, :5, :7], x)
    assert padded[:, 5:].abs().sum() == 0 and padded[:, :, 7:].abs().sum() == 0
    same, none = pad_to_windows(torch.randn(1, 8, 4, 2), 4)
    assert none == (0, 0) and same.shape == (1, 8, 4, 2)


def test_shifted_mask_by_hand_8x8_window_4_shift_2():
    # Regions of the shifted map: rows [0,4) [4,6) [6,8) x columns [0,4) [4,6) [6,8).
    regions = torch.tensor(
        [[0, 0, 0, 0, 1, 1, 2, 2]] * 4
        + [[3, 3, 3, 3, 4, 4, 5, 5]] * 2
        + [[6, 6, 6, 6, 7, 7, 8, 8]] * 2
    )
    mask = shifted_window_mask(8, 8, 4, 2)
    assert mask.shape == (4, 16, 16)
    for win, (r0, c0) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        ids = regions[r0 : r0 + 4, c0 : c0 + 4].reshape(-1)
        for i in range(16):
            for j in range(16):
                assert mask[win, i, j] == (0.0 if ids[i] == ids[j] else -100.0)
    assert torch.all(mask[0] == 0)  # the top-left window is one region
    # Bottom-right window: 4 regions of 4 tokens each, so 4 unmasked keys per query.
    assert torch.all((mask[3] == 0).sum(-1) == 4)


def reference_window_attention(
    attn: WindowAttention, windows: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """softmax(Q Kᵀ / √d + bias + mask) V per window and head, in float64, with the bias looked up
    from the table by each pair's (dy, dx)."""
    ws, heads = attn.window_size, attn.num_heads
    windows = windows.double()
    wq, bq = attn.qkv.weight.double(), attn.qkv.bias.double()
    table = attn.relative_position_bias_table.double()
    bw, n, c = windows.shape
    d = c // heads
    out = torch.zeros(bw, n, c, dtype=torch.float64)
    for w in range(bw):
        qkv = windows[w] @ wq.T + bq
        q, k, v = qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :]
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            logits = q[:, sl] @ k[:, sl].T / math.sqrt(d)
            for i in range(n):
                for j in range(n):
                    dy, dx = i // ws - j // ws, i % ws - j % ws
                    logits[i, j] += table[(dy + ws - 1) * (2 * ws - 1) + dx + ws - 1, h]
            if mask is not None:
                logits = logits + mask[w % mask.shape[0]].double()
            out[w, :, sl] = logits.softmax(-1) @ v[:, sl]
    return out @ attn.proj.weight.double().T + attn.proj.bias.double()


def test_window_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    attn = WindowAttention(dim=8, window_size=3, num_heads=2)
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()  # make the bias matter
    windows = torch.randn(2 * 4, 9, 8)
    mask = torch.zeros(4, 9, 9).masked_fill(torch.rand(4, 9, 9) < 0.3, -100.0)
    mask.diagonal(dim1=1, dim2=2).zero_()
    for m in (None, mask):
        ours = attn(windows, m).double()
        assert torch.allclose(ours, reference_window_attention(attn, windows, m), atol=1e-5)


def reference_block(block: SwinBlock, x: torch.Tensor) -> torch.Tensor:
    """Swin block computed token by token in float64: each token of the zero-padded map attends
    to the tokens in the same window of the map rolled by -shift and in the same region of it."""
    block = block.double()
    ws, s = block.window_size, block.shift
    b, h, w, c = x.shape
    x = x.double()
    hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
    normed = torch.zeros(b, hp, wp, c, dtype=torch.float64)
    normed[:, :h, :w] = block.norm1(x)
    attn = block.attn
    heads, d = attn.num_heads, c // attn.num_heads
    tokens = normed.view(b, hp * wp, c)
    qkv = tokens @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = qkv.split(c, -1)

    def rolled(p: int) -> tuple[int, int]:
        return ((p // wp - s) % hp, (p % wp - s) % wp)

    def region(r: int, size: int) -> int:
        return 0 if not s or r < size - ws else (1 if r < size - s else 2)

    def group(p: int) -> tuple[int, int, int, int]:
        ry, rx = rolled(p)
        return (ry // ws, rx // ws, region(ry, hp), region(rx, wp))

    groups = [group(p) for p in range(hp * wp)]
    out = torch.zeros(b, hp * wp, c, dtype=torch.float64)
    table = attn.relative_position_bias_table
    for p in range(hp * wp):
        keys = [t for t in range(hp * wp) if groups[t][:2] == groups[p][:2]]
        same = torch.tensor([groups[t] == groups[p] for t in keys])
        (py, px), offsets = rolled(p), [rolled(t) for t in keys]
        index = [(py - ty + ws - 1) * (2 * ws - 1) + px - tx + ws - 1 for ty, tx in offsets]
        for hd in range(heads):
            sl = slice(hd * d, (hd + 1) * d)
            logits = torch.einsum("bd,bkd->bk", q[:, p, sl], k[:, keys, sl]) / math.sqrt(d)
            logits = logits + table[index, hd] + (~same) * -100.0
            out[:, p, sl] = torch.einsum("bk,bkd->bd", logits.softmax(-1), v[:, keys, sl])
    out = out @ attn.proj.weight.T + attn.proj.bias
    x = x + out.view(b, hp, wp, c)[:, :h, :w]
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize(("size", "shift"), [((4, 4), 0), ((8, 8), 2), ((6, 7), 2), ((5, 9), 0)])
def test_swin_block_matches_token_by_token_reference(size, shift):
    torch.manual_seed(1)
    block = SwinBlock(dim=8, num_heads=2, window_size=4, shift=shift).eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_()
    x = torch.randn(2, *size, 8)
    with torch.no_grad():
        ours = block(x)
        assert ours.shape == x.shape  # padding is cropped: output size equals input size
        expected = reference_block(block, x)
    assert torch.allclose(ours.double(), expected, atol=1e-5)


def test_swin_block_one_window_no_shift_is_full_attention():
    torch.manual_seed(2)
    block = SwinBlock(dim=12, num_heads=3, window_size=5, shift=0).eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_()
    x = torch.randn(3, 5, 5, 12)
    attn = block.attn
    tokens = block.norm1(x).view(3, 25, 12)
    q, k, v = (tokens @ attn.qkv.weight.T + attn.qkv.bias).view(3, 25, 3, 3, 4).unbind(2)
    bias = attn.position_bias()
    full = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias
    )
    y = x + attn.proj(full.transpose(1, 2).reshape(3, 25, 12)).view(3, 5, 5, 12)
    expected = y + block.mlp(block.norm2(y))
    assert torch.allclose(block(x), expected, atol=1e-5)


def test_swin_block_backward_and_drop_path():
    block = SwinBlock(dim=8, num_heads=2, window_size=3, shift=1, drop_path=0.5).train()
    x = torch.randn(4, 7, 5, 8, requires_grad=True)
    block(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in block.parameters())
    assert block.drop_path.p == 0.5  # stochastic depth itself: tests/ops/test_drop_path.py


def test_bad_arguments():
    with pytest.raises(ValueError, match="shift"):
        shifted_window_mask(8, 8, 4, 4)
    with pytest.raises(ValueError, match="divisible"):
        WindowAttention(10, 3, 3)
    with pytest.raises(ValueError, match="windows"):
        WindowAttention(8, 3, 2)(torch.randn(2, 8, 8))
    with pytest.raises(ValueError, match="shift"):
        SwinBlock(8, 2, window_size=4, shift=4)
