"""Multi-scale RoIAlign of the RoI graphs: equal to MultiScaleRoIAlign in PyTorch and, as an ONNX
RoiAlign node in onnxruntime, to a float64 bilinear reference."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import torch

from drivemtl.export.roi_align import multiscale_roi_align
from drivemtl.ops.roi_align import MultiScaleRoIAlign

BOXES = [
    torch.tensor([[0.0, 0.0, 20.0, 12.0], [3.5, 2.0, 60.0, 30.0], [-4.0, -2.0, 8.0, 6.0]]),
    torch.tensor([[10.0, 5.0, 127.0, 63.0], [30.0, 10.0, 31.0, 11.0]]),
]


def maps(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 64 // s, 128 // s, generator=g) for s in (4, 8, 16, 32)]


def rois_of(boxes):
    return torch.cat(
        [torch.cat((torch.full((len(b), 1), float(i)), b), 1) for i, b in enumerate(boxes)]
    )


def bilinear_reference(feature, roi, scale, size=7, grid=2):
    """torchvision-style aligned RoIAlign of one RoI in float64, sample by sample."""
    f = feature.double().numpy()
    _, height, width = f.shape
    x1, y1, x2, y2 = (float(v) * scale - 0.5 for v in roi)
    bw, bh = (x2 - x1) / size, (y2 - y1) / size
    out = np.zeros((f.shape[0], size, size))
    for py in range(size):
        for px in range(size):
            acc = np.zeros(f.shape[0])
            for iy in range(grid):
                for ix in range(grid):
                    y = y1 + py * bh + (iy + 0.5) * bh / grid
                    x = x1 + px * bw + (ix + 0.5) * bw / grid
                    if y < -1 or y > height or x < -1 or x > width:
                        continue
                    y, x = max(y, 0.0), max(x, 0.0)
                    y0, x0 = min(int(y), height - 1), min(int(x), width - 1)
                    y = float(y0) if y0 >= height - 1 else y
                    x = float(x0) if x0 >= width - 1 else x
                    ya, xa = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
                    ly, lx = y - y0, x - x0
                    acc += (1 - ly) * (1 - lx) * f[:, y0, x0] + (1 - ly) * lx * f[:, y0, xa]
                    acc += ly * (1 - lx) * f[:, ya, x0] + ly * lx * f[:, ya, xa]
            out[:, py, px] = acc / grid**2
    return out


def test_equal_to_multiscale_roi_align_in_pytorch():
    pooler = MultiScaleRoIAlign(7, sampling_ratio=2)
    levels = maps()
    ref = pooler(levels, (4, 8, 16, 32), BOXES)
    got = multiscale_roi_align(pooler, levels, (4, 8, 16, 32), rois_of(BOXES))
    assert torch.equal(ref, got)


def test_onnx_roialign_matches_a_float64_reference(tmp_path):
    pooler = MultiScaleRoIAlign(7, sampling_ratio=2)

    class Pool(torch.nn.Module):
        def forward(self, p2, p3, p4, p5, rois):
            return multiscale_roi_align(pooler, [p2, p3, p4, p5], (4, 8, 16, 32), rois)

    levels = maps(1)
    rois = rois_of(BOXES)
    names = ["p2", "p3", "p4", "p5", "rois"]
    with warnings.catch_warnings():  # the tracer's notes on the PyTorch kernel it replaces
        warnings.simplefilter("ignore")
        torch.onnx.export(Pool(), (*levels, rois), str(tmp_path / "pool.onnx"), dynamo=False,
                          opset_version=17, input_names=names, output_names=["pooled"],
                          dynamic_axes={"rois": {0: "r"}, "pooled": {0: "r"}})  # fmt: skip
    session = ort.InferenceSession(str(tmp_path / "pool.onnx"), providers=["CPUExecutionProvider"])
    feeds = {n: v.numpy() for n, v in zip(names, [*levels, rois], strict=True)}
    got = session.run(None, feeds)[0]
    # Level of each box by the FPN rule floor(4 + log2(sqrt(area) / 224)), clamped to 2..5.
    for k, row in enumerate(rois):
        area = float((row[3] - row[1]) * (row[4] - row[2]))
        level = int(min(max(np.floor(4 + np.log2(np.sqrt(area) / 224 + 1e-6)), 2), 5))
        feature = levels[level - 2][int(row[0])]
        ref = bilinear_reference(feature, row[1:], 1.0 / 2**level)
        assert np.abs(got[k] - ref).max() < 1e-5, k
