"""The root of a DriveMTL run configuration, composed from each layer's own section.

`model` (models layer), `data` (data layer), `recipe` and `train` (engine) are validated by the
section models those layers define; every section forbids unknown keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from drivemtl.config.base import StrictModel
from drivemtl.config.loader import load_config
from drivemtl.config.plugins import import_plugins
from drivemtl.data.config import REMAPPABLE, DataConfig
from drivemtl.engine.config import RecipeConfig, TrainConfig
from drivemtl.models.config import ModelConfig


class RunConfig(StrictModel):
    """Root of a DriveMTL configuration file.

    `plugins` come first: they are imported before the other sections are validated, so the
    tasks, data fields, heads or stage kinds they register can be named there.
    """

    plugins: list[str] = Field(
        default_factory=list,
        description="plug-in modules (dotted names or .py files) imported before validation",
    )
    name: str = "run"
    seed: int = 0
    output_dir: Path = Path("runs")
    model: ModelConfig = Field(default_factory=ModelConfig)
    recipe: RecipeConfig | None = Field(None, description="training stages (`drivemtl train`)")
    train: TrainConfig = Field(default_factory=TrainConfig)
    data: DataConfig | None = Field(None, description="image sets and sampling (`drivemtl.data`)")

    @field_validator("plugins")
    @classmethod
    def _import_plugins(cls, plugins: list[str]) -> list[str]:
        import_plugins(plugins)
        return plugins

    @model_validator(mode="after")
    def _same_classes(self) -> RunConfig:
        """Every set's class-map labels use the class list of the model's task."""
        if self.data is None:
            return self
        for set_name, set_cfg in self.data.sets.items():
            for task in sorted(set(set_cfg.tasks) & set(REMAPPABLE) & set(self.model.tasks)):
                wanted = self.model.tasks[task].head.get("classes") or REMAPPABLE[task]
                given = set_cfg.classes_of(task)
                if tuple(wanted) != given:
                    raise ValueError(
                        f"data.sets.{set_name}: its {task} classes {list(given)} are not the "
                        f"model's (model.tasks.{task}.head.classes: {list(wanted)}); map them "
                        f"with data.sets.{set_name}.remap.{task}"
                    )
        return self


def load_run_config(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """A run config from YAML (with `_base_` files and `--set` overrides)."""
    return load_config(path, RunConfig, overrides)
