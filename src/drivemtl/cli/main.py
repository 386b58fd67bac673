"""Entry point of the `drivemtl` command: global options, sub-commands, one-line user errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from drivemtl.cli.bench import bench
from drivemtl.cli.data import app as data_app
from drivemtl.cli.demo import demo
from drivemtl.cli.errors import USER_ERRORS
from drivemtl.cli.eval import eval_model
from drivemtl.cli.eval_files import eval_files
from drivemtl.cli.export import export
from drivemtl.cli.model import app as model_app
from drivemtl.cli.options import set_option
from drivemtl.cli.predict import predict
from drivemtl.cli.train import grid_search, pseudo_label, train
from drivemtl.log import setup_logging

app = typer.Typer(
    name="drivemtl",
    help="DriveMTL: one network for every 2D perception task of a self-driving car.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.command("eval")(eval_model)
app.command("eval-files")(eval_files)
app.add_typer(model_app, name="model")
app.command("train")(train)
app.command("pseudo-label")(pseudo_label)
app.command("grid-search")(grid_search)
app.command("predict")(predict)
app.command("export")(export)
app.command("demo")(demo)
app.command("bench")(bench)

console = Console()
SetOption = set_option("model.backbone.width=32")


@app.callback()
def _global_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    """DriveMTL: one network for every 2D perception task of a self-driving car."""
    setup_logging(-1 if quiet else 1 if verbose else 0)


@app.command()
def version() -> None:
    """Print the DriveMTL version."""
    from drivemtl import __version__

    console.print(f"drivemtl {__version__}")


@app.command()
def doctor(
    path: Annotated[
        Path, typer.Option(help="Where runs will be written (for the disk check).")
    ] = Path("."),
) -> None:
    """Report Python, torch, CUDA devices, optional packages, threads and free disk."""
    from drivemtl.cli.doctor import run_checks

    table = Table(title="drivemtl doctor", show_header=True)
    table.add_column("check")
    table.add_column("value")
    table.add_column("")
    for check in run_checks(path):
        table.add_row(check.name, check.value, "[green]ok[/]" if check.ok else "[yellow]![/]")
    console.print(table)


@config_app.command("show")
def config_show(
    file: Annotated[Path, typer.Argument(help="YAML config file.")],
    overrides: SetOption = None,
) -> None:
    """Print the fully resolved config (bases merged, overrides applied, defaults filled)."""
    from drivemtl.config import dump_config
    from drivemtl.engine.run_config import load_run_config

    config = load_run_config(file, overrides or [])
    typer.echo(dump_config(config), nl=False)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line on stderr and exit with status 2 (with their
    traceback only under --verbose)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="drivemtl")
    except USER_ERRORS as exc:
        console = Console(stderr=True, soft_wrap=True)
        if {"--verbose", "-v"} & set(args):
            console.print_exception()
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
