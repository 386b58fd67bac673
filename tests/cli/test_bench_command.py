"""`drivemtl bench`: the tables on screen, bench.json in --out, one-line errors for bad options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from drivemtl.cli.bench import parse_size
from drivemtl.cli.errors import UsageError
from drivemtl.cli.main import main
from drivemtl.engine.run_config import load_run_config
from drivemtl.models import build_model
from drivemtl.models.summary import summarize

CONFIG = (
    "seed: 3\n"
    "model:\n  backbone: {type: resnet18, width: 8, norm: gn}\n"
    "  neck: {type: fpn, out_channels: 16, norm: gn}\n"
    "  tasks: {semantic: {head: {channels: 16}}, depth: {head: {channels: 16}}}\n"
)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """The CLI in-process: (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_parse_size() -> None:
    assert parse_size("720x1280") == (720, 1280)
    assert parse_size(" 64 X 96 ") == (64, 96)
    for bad in ("720", "0x10", "axb", "1x2x3"):
        with pytest.raises(UsageError, match="--size"):
            parse_size(bad)


def test_bench_prints_tables_and_writes_json(tmp_path: Path, capsys) -> None:
    config = tmp_path / "dense.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    argv = ["bench", str(config), "--size", "64x96", "--batch", "2", "--repeats", "2",
            "--warmup", "0", "--backend", "eager", "--backend", "onnxruntime",
            "--out", str(out)]  # fmt: skip
    code, stdout, stderr = run(argv, capsys)
    assert code == 0, stderr
    assert "heads.semantic" in stdout and "unified / single-task MACs ratio" in stdout
    assert "onnxruntime: not available" not in stdout  # exported and run by onnxruntime
    data = json.loads((out / "bench.json").read_text())
    torch.manual_seed(3)  # the config's seed: the same random weights as the command's
    summary = summarize(build_model(load_run_config(config).model), (64, 96))
    assert data["total_macs"] == summary.total_macs
    assert data["total_params"] == summary.total_params
    assert [(b["name"], b["status"]) for b in data["backends"]] == [
        ("eager", "ok"),
        ("onnxruntime", "ok"),
    ]
    assert [len(b["latency_s"]["runs"]) for b in data["backends"]] == [2, 2]
    assert data["backends"][0]["peak_memory_bytes"] > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--size", "64by96"], "--size '64by96'"),
        (["--repeats", "0"], "--repeats 0"),
        (["--backend", "tensorrt"], "unknown backends ['tensorrt']"),
        (["--checkpoint", "nowhere/w.safetensors"], "nowhere/w.safetensors"),
    ],
)
def test_bad_options_are_one_line(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    config = tmp_path / "dense.yaml"
    config.write_text(CONFIG)
    code, _, stderr = run(["bench", str(config), "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2 and message in stderr and "Traceback" not in stderr
    assert not (tmp_path / "o").exists()
