"""Peak activation memory of the DenseMTL networks with mTEB / xTAM at 1024x512, counted on `meta`.

For `configs/models/r101_densemtl.yaml` (ASPP + skip decoders, exchange at decoder scale 1 =
stride 2) and `configs/models/r50_densemtl.yaml` (FPN decoders, stride 4), each with an mTEB
over its four tasks (128 channels), at the xTAM downscale factors 2, 4 and 8, batch 1 and 2:
the whole pass's peak and the exchange block's own part, for inference (no_grad) and for a
training forward (autograd keeps what the backward pass needs; gradients not included). Nothing
is computed: the models are built and run on the `meta` device (a few seconds per row).

    .venv/bin/python benchmarks/bench_memory_densemtl.py [--size 512x1024] [--batches 1 2]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from drivemtl.engine.run_config import load_run_config
from drivemtl.models import build_model
from drivemtl.models.memory import meta_call, meta_twins
from drivemtl.models.summary import blank_batch, model_memory

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("configs/models/r101_densemtl.yaml", "configs/models/r50_densemtl.yaml")
TASKS = "[semantic, depth, normals, edges]"
GIB = 2**30


def attention_positions(model: torch.nn.Module, size: tuple[int, int], downscale: int) -> int:
    """Positions of the xTAM attention: pooled cells of the exchanged task features at `size`."""
    with torch.no_grad():
        out = meta_call(model.eval(), meta_twins(model), blank_batch(size, "meta"), targets=False)
    height, width = out.features.tasks["semantic"].shape[-2:]
    return math.ceil(height / downscale) * math.ceil(width / downscale)


def main() -> None:
    """Print one row per config, downscale, batch and mode."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512x1024", help="input HEIGHTxWIDTH")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--downscales", type=int, nargs="+", default=[2, 4, 8])
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    print(f"input {size[0]}x{size[1]}; GiB = 2**30 bytes; exchange = the mTEB block's own part")
    print(f"{'config':<20}{'s':>3}{'N':>7}{'attn/img+pair':>15}{'batch':>6}"
          f"{'infer peak':>12}{'xchg':>8}{'train peak':>12}{'xchg':>8}")  # fmt: skip
    for path in CONFIGS:
        for downscale in args.downscales:
            exchange = f"{{type: mteb, tasks: {TASKS}, channels: 128, downscale: {downscale}}}"
            cfg = load_run_config(REPO / path, [f"model.exchanges=[{exchange}]"])
            with torch.device("meta"):
                model = build_model(cfg.model)
            n = attention_positions(model, size, downscale)
            for batch in args.batches:
                row = (
                    f"{Path(path).stem:<20}{downscale:>3}{n:>7}{n * n * 4 / GIB:>13.3f}G{batch:>6}"
                )
                for training in (False, True):
                    try:
                        memory = model_memory(model, size, batch, training=training)
                    except ValueError:  # BatchNorm after image pooling: training needs batch > 1
                        row += f"{'n/a':>12}{'':>8}"
                        continue
                    own = memory.stage("exchanges.0").own_bytes
                    row += f"{memory.peak_bytes / GIB:>11.2f}G{own / GIB:>7.2f}G"
                print(row, flush=True)


if __name__ == "__main__":
    main()
