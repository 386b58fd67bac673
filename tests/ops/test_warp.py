import numpy as np
import torch

from drivemtl.ops import warp_by_flow


def reference_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling at p + flow(p) with zero padding, one pixel at a time (float64)."""
    x_np, f_np = x.detach().double().numpy(), flow.detach().double().numpy()
    n, _, h, w = x_np.shape
    out = np.zeros_like(x_np)
    for b in range(n):
        for i in range(h):
            for j in range(w):
                sx, sy = j + f_np[b, 0, i, j], i + f_np[b, 1, i, j]
                x0, y0 = int(np.floor(sx)), int(np.floor(sy))
                for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                    weight = (1 - abs(sx - xx)) * (1 - abs(sy - yy))
                    if 0 <= yy < h and 0 <= xx < w:
                        out[b, :, i, j] += weight * x_np[b, :, yy, xx]
    return torch.from_numpy(out)


def test_zero_and_integer_flow():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 7, generator=gen, dtype=torch.float64)
    assert torch.allclose(warp_by_flow(x, torch.zeros(2, 2, 5, 7, dtype=torch.float64)), x)
    flow = torch.zeros(2, 2, 5, 7, dtype=torch.float64)
    flow[:, 0] = 2.0  # sample two pixels to the right
    out = warp_by_flow(x, flow)
    assert torch.allclose(out[..., :5], x[..., 2:])
    assert out[..., 5:].abs().max() == 0


def test_fractional_flow_matches_reference_and_gradcheck():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    flow = (torch.randn(1, 2, 4, 6, generator=gen, dtype=torch.float64) * 1.7).requires_grad_()
    assert torch.allclose(warp_by_flow(x, flow), reference_warp(x, flow), atol=1e-12)
    assert torch.autograd.gradcheck(warp_by_flow, (x, flow))
