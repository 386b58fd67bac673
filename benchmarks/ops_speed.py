"""Time DriveMTL's pure-PyTorch ops on this machine's CPU and print the figures.

RoIAlign forward / backward (512 boxes, 1x256x100x176 map -> 7x7), NMS and class-aware NMS
(thousands of boxes), and a ResNet-50-FPN forward at 360x640. Run:
``python benchmarks/ops_speed.py [--threads N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from drivemtl.models.backbones import ResNet
from drivemtl.models.necks import FPN
from drivemtl.ops import batched_nms, box_iou, nms, roi_align


def timed(fn: Callable[[], object], repeat: int, warmup: int = 1) -> tuple[float, float]:
    """Median and min wall time of ``fn`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def random_boxes(n: int, height: float, width: float, gen: torch.Generator) -> torch.Tensor:
    """Boxes of mixed sizes (8 px to 30% of the image) centred anywhere in the image."""
    ctr = torch.rand(n, 2, generator=gen) * torch.tensor([width, height])
    wh = 8 + torch.rand(n, 2, generator=gen) * torch.tensor([width, height]) * 0.3
    return torch.cat((ctr - wh / 2, ctr + wh / 2), dim=1)


def clustered_boxes(n: int, objects: int, gen: torch.Generator) -> torch.Tensor:
    """Detector-like output: many jittered boxes around a few objects of 16-256 px."""
    ctr = torch.rand(objects, 2, generator=gen) * torch.tensor([1280.0, 720.0])
    size = 16 + torch.rand(objects, 2, generator=gen) * 240
    pick = torch.randint(0, objects, (n,), generator=gen)
    centre = ctr[pick] + torch.randn(n, 2, generator=gen) * size[pick] * 0.1
    wh = size[pick] * (1 + 0.1 * torch.randn(n, 2, generator=gen)).clamp(min=0.3)
    return torch.cat((centre - wh / 2, centre + wh / 2), dim=1)


def report(name: str, times: tuple[float, float]) -> None:
    print(f"{name:<58s} median {times[0]:8.1f} ms   min {times[1]:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, impl='torch'")

    features = torch.randn(1, 256, 100, 176, generator=gen, requires_grad=True)
    boxes = random_boxes(512, 400, 704, gen)
    for sampling_ratio in (2, -1):
        label = f"sampling_ratio={sampling_ratio}"

        def forward(sr: int = sampling_ratio) -> torch.Tensor:
            return roi_align(features, [boxes], 7, 0.25, sr, True, impl="torch")

        def forward_backward(sr: int = sampling_ratio) -> None:
            roi_align(features, [boxes], 7, 0.25, sr, True, impl="torch").sum().backward()

        with torch.no_grad():
            report(f"roi_align fwd 512 boxes 256x100x176->7x7 {label}", timed(forward, args.repeat))
        report(f"roi_align fwd+bwd same, {label}", timed(forward_backward, args.repeat))

    for n in (1000, 5000):
        for kind, b in (
            ("uniform", random_boxes(n, 720, 1280, gen)),
            ("clustered", clustered_boxes(n, 100, gen)),
        ):
            s = torch.rand(n, generator=gen)
            labels = torch.randint(0, 10, (n,), generator=gen)
            kept = len(nms(b, s, 0.5, impl="torch"))
            report(
                f"nms {n} {kind} boxes iou 0.5 ({kept} kept)",
                timed(lambda b=b, s=s: nms(b, s, 0.5, impl="torch"), args.repeat),
            )
            report(
                f"batched_nms {n} {kind} boxes, 10 classes, iou 0.5",
                timed(
                    lambda b=b, s=s, c=labels: batched_nms(b, s, c, 0.5, impl="torch"),
                    args.repeat,
                ),
            )
    b = random_boxes(5000, 720, 1280, gen)
    report("  (for scale: one 5000x5000 box_iou matrix)", timed(lambda: box_iou(b, b), 3))

    backbone = ResNet(50).eval()
    neck = FPN(backbone.out_channels, 256, norm=None).eval()
    image = torch.randn(1, 3, 360, 640, generator=gen)
    with torch.no_grad():
        report("ResNet-50 + FPN forward 1x3x360x640", timed(lambda: neck(backbone(image)), 3))
        small = ResNet(18, width=16).eval()
        small_neck = FPN(small.out_channels, 64, norm="gn").eval()
        report(
            "ResNet-18 width 16 + FPN(64, GN) forward 1x3x360x640",
            timed(lambda: small_neck(small(image)), 3),
        )


if __name__ == "__main__":
    main()
