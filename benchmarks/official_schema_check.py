"""Load the Scalabel JSON DriveMTL writes with the official `scalabel.label.io.load` (by hand).

Opt-in, outside `make test` (the official toolkit pins numpy < 2 / pydantic < 2, so it lives in
its own environment). Run from the repository root:

    .venv/bin/python benchmarks/official_schema_check.py --official /tmp/bdd-official/bin/python

The DriveMTL side writes, into a temporary folder, the label files of two tiny synthetic
datasets (`drivemtl data synth` presets "all" and "bdd-sets"), a `drivemtl predict` export
(boxes + track ids, RLE instance masks, pose graphs, tags) and the JSON the pseudo-labeller
builds for box / pose / tag tasks (its score thresholds applied). It then runs this script under
the official interpreter (`--check DIR`), which

1. compares tests/structures/data/scalabel_schema.json (the transcription the CI test checks
   against) with the pydantic models of scalabel.label.typing: fields, required, nullable, types;
2. loads every JSON file with `scalabel.label.io.load` (full pydantic validation) and prints
   the frames and label fields it read.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "tests/structures/data/scalabel_schema.json"


# ----------------------------------------------------------------------------- DriveMTL side
def write_files(out: Path) -> list[Path]:
    """Write the label files of the three writers under `out`; returns them."""
    import torch

    from drivemtl.data.synthetic import generate_dataset
    from drivemtl.data.writers import PredictionWriter, prediction_to_frame
    from drivemtl.engine.pseudo_label import PseudoLabelRules
    from drivemtl.structures import FramePrediction, Instances, SampleMeta
    from drivemtl.structures.scalabel import save_frames

    generate_dataset(out / "synth_all", "all", num_frames=4, size=(96, 54), seed=7, progress=False)
    generate_dataset(
        out / "synth_bdd", "bdd-sets", num_frames=8, size=(96, 54), seed=2, progress=False
    )

    def prediction(name: str, video: str | None, index: int | None) -> FramePrediction:
        masks = torch.zeros(2, 6, 8, dtype=torch.bool)
        masks[0, 1:3, 1:4] = True
        masks[1, 2:5, 3:7] = True
        meta = SampleMeta(
            name=name, image_set="s", orig_size=(6, 8), video=video, frame_index=index
        )
        return FramePrediction(
            meta=meta,
            tags=torch.tensor([2, 6, 0]),
            detections=Instances(
                boxes=torch.tensor([[1.0, 2.0, 3.5, 4.0], [0.0, 0.0, 2.0, 2.0]]),
                classes=torch.tensor([2, 0]),
                scores=torch.tensor([0.75, 0.2]),
                track_ids=torch.tensor([41, -1]),
            ),
            instances=Instances(
                boxes=torch.tensor([[1.0, 1, 4, 3], [3, 2, 7, 5]]),
                classes=torch.tensor([0, 2]),
                scores=torch.tensor([0.4, 0.9]),
                masks=masks,
            ),
            poses=Instances(
                boxes=torch.tensor([[0.0, 0, 5, 5]]),
                classes=torch.tensor([0]),
                scores=torch.tensor([0.6]),
                keypoints=torch.rand(1, 18, 3, generator=torch.Generator().manual_seed(0)) * 5,
            ),
        )

    writer = PredictionWriter(out / "predict")
    writer.add(prediction("vid/vid-0000003.jpg", "vid", 3))
    writer.add(prediction("b.jpg", None, None))
    writer.close()
    rules = PseudoLabelRules()
    pseudo = [
        prediction_to_frame(
            prediction(f"img/p{i}.jpg", None, None),
            tasks=["tagging", "detection", "pose"],
            min_score=rules.box_score,
            min_joint_score=rules.joint_score,
        )
        for i in range(2)
    ]
    save_frames(pseudo, out / "pseudo" / "labels.json")
    return sorted(out.rglob("*.json"))


# ----------------------------------------------------------------------------- official side
def _kind(annotation: Any) -> Any:
    """A pydantic 1 field annotation in the transcription's type language."""
    from pydantic import BaseModel

    if isinstance(annotation, typing.ForwardRef):
        return {"model": annotation.__forward_arg__}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {"model": annotation.__name__}
    if annotation in (str, float, int, bool):
        return annotation.__name__
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union:
        return {"union": [_kind(a) for a in args if a is not type(None)]}
    if origin is list:
        return {"list": _kind(args[0])}
    if origin is tuple:
        return {"tuple": [_kind(a) for a in args]}
    if origin is dict:
        return {"dict": _kind(args[1])}
    raise TypeError(f"no transcription for {annotation!r}")


def compare_schema() -> list[str]:
    """Differences between the committed transcription and scalabel.label.typing's models."""
    import scalabel.label.typing as st

    models = json.loads(SCHEMA.read_text(encoding="utf-8"))["models"]
    problems = []
    for name, fields in models.items():
        cls = getattr(st, name)
        real = cls.__fields__
        if set(real) != set(fields):
            problems.append(f"{name}: fields {sorted(real)} != {sorted(fields)}")
        for field_name, spec in fields.items():
            if field_name not in real:
                continue
            field = real[field_name]
            actual = {
                "type": _kind(field.outer_type_),
                "required": bool(field.required),
                "nullable": bool(field.allow_none),
            }
            if actual != spec:
                problems.append(f"{name}.{field_name}: official {actual}, transcribed {spec}")
    return problems


def check(folder: Path) -> int:
    """Compare the transcription and load every JSON under `folder`; 0 when all is well."""
    from scalabel.label.io import load

    problems = compare_schema()
    print(f"schema transcription vs scalabel.label.typing: {len(problems)} differences")
    for problem in problems:
        print("  " + problem)
    failed = 0
    for path in sorted(folder.rglob("*.json")):
        try:
            frames = load(str(path)).frames
        except Exception as exc:  # report every file, whatever the loader raises
            failed += 1
            print(f"FAIL {path.relative_to(folder)}: {type(exc).__name__}: {exc}")
            continue
        kinds = sorted(
            {
                key
                for frame in frames
                for label in frame.labels or []
                for key, value in label.__dict__.items()
                if value is not None
            }
        )
        print(f"ok   {path.relative_to(folder)}: {len(frames)} frames, label fields {kinds}")
    return 1 if problems or failed else 0


def main() -> None:
    """DriveMTL side (write, then call the official interpreter) or official side (--check)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", type=Path, help="(official interpreter) folder to load")
    parser.add_argument("--official", default="/tmp/bdd-official/bin/python")
    parser.add_argument("--keep", type=Path, help="write the files here instead of a temp dir")
    args = parser.parse_args()
    if args.check is not None:
        sys.exit(check(args.check))
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp)
        files = write_files(out)
        print(f"wrote {len(files)} JSON files under {out}")
        done = subprocess.run([args.official, __file__, "--check", str(out)], check=False)
        sys.exit(done.returncode)


if __name__ == "__main__":
    main()
