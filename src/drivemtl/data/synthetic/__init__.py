"""The synthetic driving world: procedural road scenes with exact labels for every task."""

from drivemtl.data.synthetic.generator import (
    GENERATOR_VERSION,
    SynthError,
    generate_dataset,
    parse_size,
    render_sequence,
)
from drivemtl.data.synthetic.presets import ALL_TASKS, PRESETS
from drivemtl.data.synthetic.render import SynthFrame

__all__ = [
    "ALL_TASKS", "GENERATOR_VERSION", "PRESETS", "SynthError", "SynthFrame", "generate_dataset",
    "parse_size", "render_sequence",
]  # fmt: skip
