import subprocess
import sys

import pytest
import yaml

from drivemtl import __version__
from drivemtl.cli.main import main


def run(argv, capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_commands(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for command in ("version", "doctor", "config"):
        assert command in out


def test_version(capsys):
    code, out, _ = run(["version"], capsys)
    assert code == 0 and out.strip() == f"drivemtl {__version__}"


def test_doctor_reports_torch_and_torchvision(capsys):
    code, out, _ = run(["doctor"], capsys)
    assert code == 0
    import torch

    assert torch.__version__ in out
    assert "torchvision" in out and "free disk" in out and "threads" in out


def test_config_show_prints_resolved_config(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text("model:\n  backbone: {type: resnet50}\n")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("_base_: [base.yaml]\nname: demo\n")
    code, out, _ = run(
        ["config", "show", str(cfg), "--set", "seed=3", "--set", "model.neck.out_channels=64"],
        capsys,
    )
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["name"] == "demo" and shown["seed"] == 3
    assert shown["model"]["backbone"]["type"] == "resnet50"
    assert shown["model"]["neck"]["out_channels"] == 64
    assert shown["model"]["backbone"]["width"] == 64  # default filled in


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["config", "show", "missing.yaml"], "/missing.yaml"),
        (["config", "show", "{cfg}", "--set", "model.nope=1"], "unknown key 'model.nope'"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys, argv, message):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("name: x\n")
    argv = [a.replace("{cfg}", str(cfg)) for a in argv]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_console_script_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "drivemtl.cli.main", "--quiet", "version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"drivemtl {__version__}"
