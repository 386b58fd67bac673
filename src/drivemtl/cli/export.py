"""`drivemtl export`: the trained network as ONNX graphs plus a model card (docs/export.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from drivemtl.cli.options import set_option

SetOption = set_option("model.tasks.depth.head.channels=32")


def export(
    config: Annotated[Path, typer.Argument(help="Run config YAML the model was trained with.")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Weights (.safetensors).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder for the graphs and card.")],
    fmt: Annotated[str, typer.Option("--format", help="Export format (onnx).")] = "onnx",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (>= 17).")] = 17,
    overrides: SetOption = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier export in --out.")
    ] = False,
) -> None:
    """Export the whole multi-task network (raw outputs of every task) for onnxruntime."""
    from drivemtl.cli.errors import UsageError
    from drivemtl.engine.run_config import load_run_config
    from drivemtl.export.card import CARD_NAME
    from drivemtl.export.exporter import export_onnx
    from drivemtl.inference.predictor import load_model
    from drivemtl.outputs import check_output_dir, refuse_overwrite

    if fmt != "onnx":
        raise UsageError(f"--format {fmt}: unknown export format; known: onnx")
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UsageError(
            "ONNX export needs the `export` extra: pip install -c constraints.txt -e '.[export]'"
        ) from None
    check_output_dir(out)
    refuse_overwrite(out / CARD_NAME, overwrite)
    cfg = load_run_config(config, overrides or [])
    model = load_model(cfg, checkpoint)
    card = export_onnx(model, cfg, out, checkpoint=checkpoint, opset=opset)
    console = Console()
    console.print(f"ONNX graphs in {out} (model card: {card})")
    console.print(f"run them with: drivemtl predict --onnx {out} --source IMAGES --out DIR")
