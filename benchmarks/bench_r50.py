"""`drivemtl bench` of the ResNet-50 + FPN network with all ten tasks at 720x1280.

`configs/models/r50_fpn.yaml` holds VTDNet's seven image-task heads (tagging, semantic,
drivable, lanes, detection, instance, pose); DriveMTL's three dense DenseMTL tasks (depth,
normals, edges) are added at the same 128-channel decoder width, as `tiny.yaml` has all ten.
`--seven` benches the config as it is. Random weights unless `--checkpoint` is given (RoI-head
costs depend on how many detections the weights produce).

    .venv/bin/python benchmarks/bench_r50.py [--repeats 5] [--warmup 1] [--batch 2]
        [--backend eager --backend onnxruntime --backend compile] [--out runs/bench_r50]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from drivemtl.cli.main import main as drivemtl

REPO = Path(__file__).resolve().parents[1]
DENSE = ("depth", "normals", "edges")


def main() -> int:
    """Run the bench command with the ten-task overrides."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="720x1280")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--backend", action="append", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_r50"))
    parser.add_argument("--seven", action="store_true", help="the seven tasks of r50_fpn.yaml")
    args = parser.parse_args()
    argv = ["bench", str(REPO / "configs/models/r50_fpn.yaml"), "--size", args.size,
            "--repeats", str(args.repeats), "--warmup", str(args.warmup),
            "--batch", str(args.batch), "--device", args.device, "--out", args.out]  # fmt: skip
    for backend in args.backend or ("eager", "onnxruntime", "compile"):
        argv += ["--backend", backend]
    if args.checkpoint:
        argv += ["--checkpoint", args.checkpoint]
    if not args.seven:
        for task in DENSE:
            argv += ["--set", f"model.tasks.{task}={{head: {{channels: 128}}}}"]
    return drivemtl(argv)


if __name__ == "__main__":
    raise SystemExit(main())
