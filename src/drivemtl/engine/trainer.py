"""Run a recipe stage by stage on Lightning, with an exact resume and a run directory.

Run directory layout::

    OUT/config.yaml                resolved config
    OUT/dataset_card.yaml          the image sets (and the synthetic world's card when present)
    OUT/run.json                   config fingerprint, finished stages, final weights
    OUT/stages/NN-NAME/checkpoints/last.ckpt   Lightning state (optimiser, loops, RNG)
    OUT/stages/NN-NAME/weights.safetensors     the stage's final weights
    OUT/stages/NN-NAME/logs/{tensorboard,csv}  per-task losses, weights, lr, images/s
    OUT/final.safetensors          weights after the last stage
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from drivemtl.config.loader import dump_config
from drivemtl.data import SAMPLERS, build_dataset
from drivemtl.engine.checkpoint import (
    CheckpointError,
    load_into,
    load_weights,
    merge_decoders,
    read_metadata,
    save_weights,
    write_json,
)
from drivemtl.engine.datamodule import StageDataModule
from drivemtl.engine.loss_weighting import build_loss_weighting
from drivemtl.engine.module import MultiTaskModule, StageSettings
from drivemtl.engine.plan import MergePlan, RecipeError, StagePlan, plan_for_model
from drivemtl.engine.run_config import RunConfig
from drivemtl.engine.stages import apply_freezing
from drivemtl.log import get_logger

log = get_logger(__name__)
RUN_STATE = "run.json"


@dataclass
class StageResult:
    """A finished stage: its weights, optimiser steps, frames seen per epoch and log folder."""

    name: str
    weights: Path
    steps: int = 0
    log_dir: Path | None = None


@dataclass
class RunResult:
    """A finished run: the run directory, the final weights and each stage's result."""

    out_dir: Path
    final_weights: Path
    stages: list[StageResult] = field(default_factory=list)


def config_fingerprint(config: RunConfig) -> str:
    """Hash of everything that determines the result (hardware / precision options excluded)."""
    data = config.model_dump(mode="json", exclude={"train", "output_dir"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class StageProgressBar(RichProgressBar):
    """Rich progress bar whose description names the stage instead of the epoch."""

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def _get_train_description(self, current_epoch: int) -> str:
        return f"stage {self.stage}"


class PeriodicCheckpoint(Callback):
    """Write `last.ckpt` (Lightning state) every N consumed batches, atomically, on all ranks."""

    def __init__(self, path: Path, every_n_batches: int) -> None:
        self.path = Path(path)
        self.every = every_n_batches

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        consumed = getattr(pl_module, "batches_consumed", idx + 1)
        if consumed % self.every == 0:
            self.save(trainer)

    def save(self, trainer: L.Trainer) -> None:
        """Save to a temporary file and rename it over `last.ckpt` (rank 0 writes)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)


class FinalWeights(Callback):
    """Rank 0 writes the stage's weights (safetensors) when training ends, in the training process."""

    def __init__(self, path: Path, stage: str) -> None:
        self.path = Path(path)
        self.stage = stage

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            meta = {"stage": self.stage, "steps": str(trainer.global_step)}
            save_weights(pl_module.model, self.path, meta)  # type: ignore[arg-type]


def _stage_dir(out_dir: Path, index: int, name: str) -> Path:
    return out_dir / "stages" / f"{index:02d}-{name}"


def _read_state(out_dir: Path) -> dict[str, Any]:
    path = out_dir / RUN_STATE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _prepare_run_dir(config: RunConfig, out_dir: Path, resume: bool) -> dict[str, Any]:
    """Check the run directory against `resume`, write config and card; return the run state."""
    fingerprint = config_fingerprint(config)
    state = _read_state(out_dir)
    if resume:
        if not state:
            raise RecipeError(f"--resume: {out_dir} holds no run ({RUN_STATE} not found)")
        if state.get("fingerprint") != fingerprint:
            raise RecipeError(
                f"--resume: {out_dir} was written by another config (fingerprint "
                f"{state.get('fingerprint')} != {fingerprint}); resume with the config in "
                f"{out_dir / 'config.yaml'} or pick another --out"
            )
        return state
    if state:
        raise RecipeError(
            f"{out_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, out_dir / "config.yaml")
    _write_dataset_card(config, out_dir / "dataset_card.yaml")
    state = {"fingerprint": fingerprint, "name": config.name, "stages": {}}
    write_json(state, out_dir / RUN_STATE)
    return state


def _write_dataset_card(config: RunConfig, path: Path) -> None:
    data = config.data  # type: ignore[attr-defined]
    card: dict[str, Any] = {"label_setting": data.label_setting, "sets": {}}
    for name, set_cfg in data.sets.items():
        entry: dict[str, Any] = {
            "reader": set_cfg.reader,
            "root": str(set_cfg.root),
            "tasks": list(set_cfg.tasks),
        }
        for candidate in (
            Path(set_cfg.root) / "dataset.yaml",
            Path(set_cfg.root).parent / "dataset.yaml",
        ):
            if candidate.is_file():
                entry["source_card"] = yaml.safe_load(candidate.read_text(encoding="utf-8"))
                break
        card["sets"][name] = entry
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(card, sort_keys=False), encoding="utf-8")
    tmp.replace(path)


def _resolve_init(init: str, state: dict[str, Any], out_dir: Path) -> Path | None:
    if init == "scratch":
        return None
    if init.startswith("stage:"):
        name = init[len("stage:") :]
        entry = state["stages"].get(name)
        if entry is None:
            raise RecipeError(f"init '{init}': stage '{name}' has not finished")
        return out_dir / entry["weights"]
    return Path(init)


def _build_model(config: RunConfig):
    from drivemtl.models import build_model

    return build_model(config.model)


def _strategy(config: RunConfig, devices: int) -> str:
    distributed = devices * config.train.num_nodes > 1
    if not distributed:
        return "auto"
    if config.train.strategy == "ddp_spawn":
        return "ddp_spawn_find_unused_parameters_true"
    return "ddp_find_unused_parameters_true"


def _run_stage(
    config: RunConfig,
    plan: StagePlan,
    out_dir: Path,
    state: dict[str, Any],
    resume: bool,
    devices: int,
    precision: str,
    progress: bool,
    callbacks: Sequence[Callback],
) -> StageResult:
    stage = plan.config
    stage_dir = _stage_dir(out_dir, plan.index, plan.name)
    ckpt_dir = stage_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last = ckpt_dir / "last.ckpt"
    world = devices * config.train.num_nodes

    L.seed_everything(config.seed + plan.index, workers=False, verbose=False)
    model = _build_model(config)
    init = _resolve_init(plan.init, state, out_dir)
    if init is not None:
        report = load_into(model, load_weights(init), source=str(init))
        if report.missing:
            log.info(
                "stage %s: %d tensors start fresh (not in %s)", plan.name, len(report.missing), init
            )
    apply_freezing(model, plan.freeze)

    dataset = build_dataset(plan.data, "train")
    sampler = SAMPLERS.get(stage.sampler)(
        dataset, stage.batch_size, rank=0, world_size=world, seed=config.seed, tasks=plan.tasks
    )
    per_epoch = len(sampler)
    if per_epoch == 0:
        raise RecipeError(
            f"stage '{plan.name}': sets {plan.sets} give no batch of {stage.batch_size} "
            f"x {world} rank(s) ({len(dataset)} frames)"
        )
    total = stage.steps if stage.steps is not None else stage.epochs * per_epoch  # type: ignore[operator]
    weighting = build_loss_weighting(
        stage.loss_weighting, plan.tasks, getattr(model, "loss_weights", {}), per_epoch
    )
    settings = StageSettings(
        name=plan.name,
        tasks=plan.tasks,
        optimizer=stage.optimizer,
        schedule=stage.schedule,
        total_steps=total,
        steps_per_unit=per_epoch if stage.epochs is not None else 1,
        max_nonfinite_steps=config.train.max_nonfinite_steps,
    )
    module = MultiTaskModule(model, weighting, settings)
    datamodule = StageDataModule(
        plan.data,
        stage.sampler,
        stage.batch_size,
        plan.tasks,
        total,
        config.seed,
        plan.index,
        config.train.num_workers,
    )
    strategy = _strategy(config, devices)
    if "spawn" not in strategy:  # spawned processes build their own (datasets hold mp locks)
        datamodule.dataset = dataset
    log_dir = stage_dir / "logs"
    weights = stage_dir / "weights.safetensors"
    stage_callbacks: list[Callback] = [
        PeriodicCheckpoint(last, config.train.checkpoint_every_n_steps),
        FinalWeights(weights, plan.name),
        LearningRateMonitor(logging_interval="step"),
        *callbacks,
    ]
    if progress:
        stage_callbacks.append(StageProgressBar(plan.name))
    with _quiet_lightning():
        trainer = L.Trainer(
            accelerator=config.train.accelerator,
            devices=devices,
            num_nodes=config.train.num_nodes,
            strategy=strategy,
            precision=precision,  # type: ignore[arg-type]
            max_steps=total,
            max_epochs=1,
            gradient_clip_val=stage.grad_clip,
            deterministic=config.train.deterministic,
            logger=[
                TensorBoardLogger(log_dir, name="tensorboard"),
                CSVLogger(log_dir, name="csv"),
            ],
            callbacks=stage_callbacks,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
            log_every_n_steps=config.train.log_every_n_steps,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            use_distributed_sampler=False,
            default_root_dir=stage_dir,
        )
    ckpt_path = str(last) if resume and last.is_file() else None
    if ckpt_path:
        log.info("stage %s: resuming from %s", plan.name, last)
    log.info(
        "stage %s: tasks %s on sets %s, %d steps (%d per epoch), %d trainable tensors "
        "(%d kept frozen by the model)",
        plan.name,
        plan.tasks,
        plan.sets,
        total,
        per_epoch,
        len(plan.freeze.trainable),
        len(plan.freeze.fixed),
    )
    with warnings.catch_warnings(), _quiet_lightning():
        warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False)
    steps = int(read_metadata(weights).get("steps", 0)) if weights.is_file() else 0
    return StageResult(plan.name, weights, steps, log_dir)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide Lightning's start-up chatter (accelerator lines, tips) unless DriveMTL logs debug."""
    names = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    if not get_logger().isEnabledFor(logging.DEBUG):
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _merge_stage(plan: MergePlan, state: dict[str, Any], out_dir: Path, model) -> Path:
    init = _resolve_init(plan.init, state, out_dir)
    base = model.state_dict()
    if init is not None:
        load_into(model, load_weights(init), source=str(init))
        base = model.state_dict()
    finetuned = {
        task: load_weights(out_dir / state["stages"][sub]["weights"])
        for task, sub in plan.parts.items()
    }
    merged = merge_decoders(base, finetuned, model.decoder_prefixes())
    index = len(state["stages"])
    path = _stage_dir(out_dir, index, plan.name) / "weights.safetensors"
    save_weights(merged, path, {"stage": plan.name, "merged": ",".join(plan.parts)})
    return path


def run_recipe(
    config: RunConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    devices: int | None = None,
    precision: str | None = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Train `config.recipe` stage by stage into `out_dir` (default: output_dir / name).

    With `resume`, finished stages are skipped and the interrupted one continues from its last
    checkpoint; the directory must come from the same config. Everything in the recipe is
    validated (tasks, sets, samplers, freezing patterns, init weights) before training starts.
    """
    out = Path(out_dir) if out_dir is not None else Path(config.output_dir) / config.name
    devices = devices or config.train.devices
    precision = precision or config.train.precision
    L.seed_everything(config.seed, workers=False, verbose=False)
    probe = _build_model(config)
    plans = plan_for_model(config, probe)
    state = _prepare_run_dir(config, out, resume)
    is_zero = int(os.environ.get("RANK", "0")) == 0
    results: list[StageResult] = []
    for plan in plans:
        done = state["stages"].get(plan.name)
        if done is not None:
            results.append(StageResult(plan.name, out / done["weights"], int(done.get("steps", 0))))
            continue
        if isinstance(plan, MergePlan):
            path = _merge_stage(plan, state, out, _build_model(config))
            result = StageResult(plan.name, path)
        else:
            result = _run_stage(
                config, plan, out, state, resume, devices, precision, progress, callbacks
            )
        results.append(result)
        state["stages"][plan.name] = {
            "weights": str(result.weights.relative_to(out)),
            "steps": result.steps,
        }
        if is_zero:
            write_json(state, out / RUN_STATE)
    final = out / "final.safetensors"
    if is_zero:
        if not results[-1].weights.is_file():
            raise CheckpointError(f"final stage weights missing: {results[-1].weights}")
        shutil.copyfile(results[-1].weights, final)
        state["final"] = final.name
        write_json(state, out / RUN_STATE)
    return RunResult(out, final, results)
