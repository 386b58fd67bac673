import torch

from drivemtl.ops import correlation, cost_volume


def reference_cost_volume(f1: torch.Tensor, f2: torch.Tensor, d: int) -> torch.Tensor:
    n, c, h, w = f1.shape
    out = torch.zeros(n, 2 * d + 1, 2 * d + 1, h, w, dtype=torch.float64)
    for i in range(2 * d + 1):
        for j in range(2 * d + 1):
            dy, dx = i - d, j - d
            for y in range(h):
                for x in range(w):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        out[:, i, j, y, x] = (f1[:, :, y, x] * f2[:, :, y + dy, x + dx]).sum(1) / c
    return out


def test_cost_volume_matches_reference_and_shapes():
    gen = torch.Generator().manual_seed(0)
    f1 = torch.randn(2, 5, 4, 6, generator=gen, dtype=torch.float64)
    f2 = torch.randn(2, 5, 4, 6, generator=gen, dtype=torch.float64)
    volume = cost_volume(f1, f2, 2)
    assert volume.shape == (2, 5, 5, 4, 6)
    assert torch.allclose(volume, reference_cost_volume(f1, f2, 2), atol=1e-12)
    flat = correlation(f1, f2, 2)
    assert flat.shape == (2, 25, 4, 6)
    assert torch.allclose(flat[:, 12], (f1 * f2).mean(1))  # centre channel: zero displacement


def test_correlation_peaks_at_true_shift_and_is_differentiable():
    gen = torch.Generator().manual_seed(1)
    f1 = torch.randn(1, 16, 8, 8, generator=gen, dtype=torch.float64)
    f2 = torch.roll(f1, shifts=(1, -2), dims=(2, 3))  # f2(p + (1, -2)) = f1(p)
    volume = cost_volume(f1, f2, 3)
    best = volume[0, :, :, 3, 4].argmax()
    assert divmod(best.item(), 7) == (3 + 1, 3 - 2)
    a = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, v: correlation(u, v, 1), (a, b))
