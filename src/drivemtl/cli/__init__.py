"""The `drivemtl` command line (typer + rich)."""
