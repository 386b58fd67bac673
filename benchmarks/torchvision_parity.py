"""Compare DriveMTL's pure-PyTorch ops with torchvision's kernels (meant for a GPU machine).

Needs torchvision (it is never a DriveMTL dependency). Checks RoIAlign forward and backward, NMS and
batched NMS, and a ResNet-50 forward with identical weights, on CUDA when available (else CPU), and
prints maximum differences and timings. Run: ``python benchmarks/torchvision_parity.py``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch

from drivemtl.models.backbones import ResNet
from drivemtl.ops import batched_nms, nms, roi_align


def timed(fn: Callable[[], object], device: torch.device, repeat: int = 10) -> float:
    """Median wall time in ms, synchronising the GPU around each call."""
    fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def boxes_in(
    n: int, height: float, width: float, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    ctr = torch.rand(n, 2, generator=gen) * torch.tensor(
        [width * 1.2, height * 1.2]
    ) - torch.tensor([width * 0.1, height * 0.1])
    wh = 4 + torch.rand(n, 2, generator=gen) * torch.tensor([width, height]) * 0.4
    return torch.cat((ctr - wh / 2, ctr + wh / 2), dim=1).to(device)


def main() -> int:
    try:
        import torchvision
        from torchvision.models import resnet50
    except Exception as error:
        print(f"torchvision does not import here ({error}); nothing to compare")
        return 1
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, device {device}")
    gen = torch.Generator().manual_seed(0)
    failures = 0

    features = torch.randn(2, 256, 100, 176, generator=gen).to(device)
    boxes = boxes_in(1024, 400, 704, gen, device)
    image = torch.randint(0, 2, (1024, 1), generator=gen).float().to(device)
    rois = torch.cat((image, boxes), dim=1)
    for sr, aligned in [(2, True), (-1, True), (2, False), (0, False)]:
        x1 = features.clone().requires_grad_()
        x2 = features.clone().requires_grad_()
        ours = roi_align(x1, rois, 7, 0.25, sr, aligned, impl="torch")
        theirs = torchvision.ops.roi_align(x2, rois, (7, 7), 0.25, sr, aligned)
        grad = torch.randn(ours.shape, generator=gen).to(device)
        ours.backward(grad)
        theirs.backward(grad)
        fwd = (ours - theirs).abs().max().item()
        bwd = (x1.grad - x2.grad).abs().max().item()
        t_ours = timed(
            lambda sr=sr, al=aligned: roi_align(features, rois, 7, 0.25, sr, al, impl="torch"),
            device,
        )
        t_tv = timed(
            lambda sr=sr, al=aligned: torchvision.ops.roi_align(
                features, rois, (7, 7), 0.25, sr, al
            ),
            device,
        )
        ok = fwd < 1e-4 and bwd < 1e-3
        failures += not ok
        print(
            f"roi_align sr={sr:>2} aligned={aligned!s:5}: max|fwd diff| {fwd:.2e}  max|grad diff| {bwd:.2e}  "
            f"ours {t_ours:7.2f} ms  torchvision {t_tv:7.2f} ms  {'OK' if ok else 'MISMATCH'}"
        )

    for n in (1000, 5000):
        b = boxes_in(n, 720, 1280, gen, device)
        s = torch.rand(n, generator=gen).to(device)
        c = torch.randint(0, 10, (n,), generator=gen).to(device)
        ours_keep, tv_keep = nms(b, s, 0.5, impl="torch"), torchvision.ops.nms(b, s, 0.5)
        ours_b = batched_nms(b, s, c, 0.5, impl="torch")
        tv_b = torchvision.ops.batched_nms(b, s, c, 0.5)
        same, same_b = torch.equal(ours_keep, tv_keep), torch.equal(ours_b, tv_b)
        if not (same and same_b):
            # Float32 rounding can flip a pair whose IoU is within ~1e-7 of the threshold.
            diff = set(ours_keep.tolist()) ^ set(tv_keep.tolist())
            diff_b = set(ours_b.tolist()) ^ set(tv_b.tolist())
            print(f"  nms {n}: {len(diff)} / batched {len(diff_b)} indices differ")
        failures += not (same and same_b)
        t_ours = timed(lambda b=b, s=s: nms(b, s, 0.5, impl="torch"), device)
        t_tv = timed(lambda b=b, s=s: torchvision.ops.nms(b, s, 0.5), device)
        print(
            f"nms {n} boxes: identical keep {same}, batched identical {same_b}; "
            f"ours {t_ours:.2f} ms, torchvision {t_tv:.2f} ms"
        )

    reference = resnet50().eval().to(device)
    ours_net = ResNet(50).eval().to(device)
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    ours_net.load_state_dict(state, strict=True)
    with torch.no_grad():
        x = torch.randn(2, 3, 360, 640, generator=gen).to(device)
        feats = ours_net(x)
        t = reference
        y = t.maxpool(t.relu(t.bn1(t.conv1(x))))
        diffs = []
        for index, layer in enumerate((t.layer1, t.layer2, t.layer3, t.layer4)):
            y = layer(y)
            diffs.append((feats[index] - y).abs().max().item() / y.abs().max().item())
    ok = max(diffs) < 1e-4
    failures += not ok
    print(
        f"ResNet-50 C2..C5 max relative diff vs torchvision: {[f'{d:.1e}' for d in diffs]} {'OK' if ok else 'MISMATCH'}"
    )
    print("ALL OK" if failures == 0 else f"{failures} MISMATCHES")
    return 0 if failures == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
