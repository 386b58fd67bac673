"""Run a recipe unit by unit, with an exact resume and a run directory.

The recipe is planned first (`plan_for_model`: every stage validated and expanded by its kind
into units); then each unit not yet finished runs itself (`Unit.run(RunContext)`, see
`drivemtl.engine.units`) and is recorded in `run.json`. Training units run on Lightning
(`RunContext.train`); a killed run resumed with the same config skips finished units and
continues the interrupted one from its last checkpoint.

Run directory layout::

    OUT/.lock                      held (flock) by the process writing the run: one writer
    OUT/config.yaml                resolved config
    OUT/dataset_card.yaml          the image sets (and the synthetic world's card when present)
    OUT/run.json                   config fingerprint, finished units, final weights
    OUT/stages/NN-NAME/checkpoints/last.ckpt   Lightning state (optimiser, loops, RNG)
    OUT/stages/NN-NAME/checkpoints/previous.ckpt   the generation before (resume falls back)
    OUT/stages/NN-NAME/weights.safetensors     the unit's final weights
    OUT/stages/NN-NAME/logs/{tensorboard,csv}  per-task losses, weights, lr, images/s
    OUT/stages/NN-NAME/pseudo_labels/          labels written by a pseudo_label stage
    OUT/final.safetensors          weights after the last unit
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn

from drivemtl.config.loader import dump_config
from drivemtl.data import SAMPLERS, build_dataset
from drivemtl.engine.checkpoint import (
    CheckpointError,
    load_into,
    load_weights,
    read_metadata,
    save_weights,
    write_json,
)
from drivemtl.engine.datamodule import StageDataModule
from drivemtl.engine.loss_weighting import build_loss_weighting
from drivemtl.engine.module import MultiTaskModule, StageSettings
from drivemtl.engine.plan import RecipeError, plan_for_model
from drivemtl.engine.run_config import RunConfig
from drivemtl.engine.run_lock import (
    LOCK_FILE,
    acquire_run_lock,
    is_secondary_rank,
    release_run_lock,
)
from drivemtl.engine.stages import apply_freezing
from drivemtl.engine.units import WEIGHTS, StagePlan, StageResult, Unit, unit_path
from drivemtl.log import get_logger
from drivemtl.outputs import check_output_dir

log = get_logger(__name__)
RUN_STATE = "run.json"


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

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """The running loss and throughput, short: no logger version, 3 significant digits
        (per-task losses go to the logs), so the bar stays on one line."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return {
            k.removeprefix("loss/").replace("images_per_s", "img/s"): f"{float(v):.3g}"
            if isinstance(v, int | float) or hasattr(v, "item")
            else v
            for k, v in metrics.items()
        }


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
        """Save to a temporary file and rename it over `last.ckpt`, keeping the one before as
        `previous.ckpt` (two generations: a corrupt newest file still leaves one to resume
        from; rank 0 writes)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state: optimiser, loops, RNG
        if trainer.is_global_zero:
            if self.path.is_file():
                os.replace(self.path, previous_checkpoint(self.path))
            os.replace(tmp, self.path)


class FinalWeights(Callback):
    """Rank 0 writes the stage's weights (safetensors) when training ends, in the training process."""

    def __init__(self, path: Path, stage: str) -> None:
        self.path = Path(path)
        self.stage = stage

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            steps = getattr(pl_module, "optimizer_steps", trainer.global_step)
            meta = {"stage": self.stage, "steps": str(steps)}
            save_weights(pl_module.model, self.path, meta)  # type: ignore[arg-type]


def _read_state(out_dir: Path) -> dict[str, Any]:
    """The run's record (`run.json`), {} when there is none; a corrupt one names the file."""
    path = out_dir / RUN_STATE
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: corrupt run record ({exc}); it is not valid JSON") from None
    if not isinstance(state, dict) or not isinstance(state.get("stages"), dict):
        raise RecipeError(f"{path}: not a DriveMTL run record (no `stages` mapping)")
    return state


def _never_trained(state: dict[str, Any], out_dir: Path) -> bool:
    """Whether a recorded run finished no unit and left no checkpoint (a failed start)."""
    return not state["stages"] and not any(out_dir.glob("stages/*/checkpoints/*.ckpt"))


def _failed_start(out_dir: Path) -> bool:
    """Whether a run folder holds nothing to resume from (no record, or one that never trained)."""
    try:
        state = _read_state(out_dir)
    except RecipeError:
        return False
    return not state or _never_trained(state, out_dir)


def _user_files(out_dir: Path) -> list[str]:
    """What a folder holds besides what a run writes before it starts (its lock)."""
    if not out_dir.is_dir():
        return []
    return sorted(p.name for p in out_dir.iterdir() if p.name != LOCK_FILE)


def _prepare_run_dir(
    config: RunConfig, out_dir: Path, resume: bool, overwrite: bool = False
) -> dict[str, Any]:
    """Check the run directory against `resume`, write config and card; return the run state.

    A folder that holds something but no run is refused without `overwrite`; a recorded run
    that never trained a step (a failed start) is replaced by a new one."""
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
    if state and not _never_trained(state, out_dir):
        raise RecipeError(
            f"{out_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    if state:
        log.info("%s: replacing a run that never trained a step", out_dir)
    elif _user_files(out_dir) and not overwrite:
        shown = ", ".join(_user_files(out_dir)[:3])
        raise RecipeError(
            f"--out {out_dir}: the folder is not empty ({shown}...) and holds no DriveMTL run; "
            f"pass --overwrite to write into it or choose another --out"
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


@dataclass
class RunContext:
    """What a unit's `run` gets: the run (config, directory, finished units, run options) and
    the engine's services (folders, weights, models, Lightning training, rank handling).

    `state["stages"]` maps each finished unit to its `weights` (relative to `out_dir`) and
    `steps`; the trainer updates it after every unit.
    """

    config: RunConfig
    out_dir: Path
    state: dict[str, Any]
    resume: bool = False
    devices: int = 1
    precision: str = "32-true"
    progress: bool = True
    callbacks: Sequence[Callback] = ()

    @property
    def is_zero(self) -> bool:
        """Whether this process is the run's rank 0 (the one that writes shared files)."""
        return int(os.environ.get("RANK", "0")) == 0

    def unit_dir(self, unit: Unit) -> Path:
        """The unit's folder `OUT/stages/NN-NAME` (created)."""
        folder = self.out_dir / unit_path(unit.index, unit.name)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def weights(self, spec: str) -> Path | None:
        """The weights `spec` names: None for "scratch", a finished unit's for "stage:NAME",
        else the path itself."""
        return _resolve_init(spec, self.state, self.out_dir)

    def build_model(self) -> nn.Module:
        """A fresh model of the run's config."""
        return _build_model(self.config)

    def start_model(self, unit: Unit) -> nn.Module:
        """The model a unit starts from: seeded by its position, its `init` weights loaded."""
        L.seed_everything(self.config.seed + unit.index, workers=False, verbose=False)
        model = self.build_model()
        init = self.weights(unit.init)
        if init is not None:
            report = load_into(model, load_weights(init), source=str(init))
            if report.missing:
                log.info(
                    "stage %s: %d tensors start fresh (not in %s)",
                    unit.name,
                    len(report.missing),
                    init,
                )
        return model

    def train(self, plan: StagePlan) -> StageResult:
        """Train `plan` through Lightning into its folder (continuing from its `last.ckpt`
        when the run resumes); returns its final weights and optimiser steps."""
        return _train(self, plan)

    def inference_device(self) -> str:
        """Where a unit runs a model for inference: "cuda" when the run may use a GPU."""
        import torch

        use_gpu = self.config.train.accelerator != "cpu" and torch.cuda.is_available()
        return "cuda" if use_gpu else "cpu"

    def wait_for(self, path: Path, timeout_s: float = 3600.0) -> None:
        """Ranks other than 0 wait until rank 0 has written `path` (a barrier where a process
        group exists)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            return
        deadline = time.monotonic() + timeout_s
        while not self.is_zero and not Path(path).exists():
            if time.monotonic() > deadline:
                raise CheckpointError(f"rank 0 did not write {path} within {timeout_s:.0f} s")
            time.sleep(1.0)


# -- training one unit ---------------------------------------------------------------------------
def _train(ctx: RunContext, plan: StagePlan) -> StageResult:
    folder = ctx.unit_dir(plan)
    last = folder / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True, exist_ok=True)
    model = ctx.start_model(plan)
    apply_freezing(model, plan.freeze)
    dataset, per_epoch = _stage_dataset(ctx, plan)
    stage = plan.config
    total = stage.steps if stage.steps is not None else stage.epochs * per_epoch  # type: ignore[operator]
    module = _stage_module(ctx, plan, model, per_epoch, total)
    datamodule = StageDataModule(
        plan.data,
        stage.sampler,
        stage.batch_size,
        plan.tasks,
        total,
        ctx.config.seed,
        plan.index,
        ctx.config.train.num_workers,
        sampler_options=stage.sampler_options,
    )
    strategy = _strategy(ctx.config, ctx.devices)
    if "spawn" not in strategy:  # spawned processes build their own (datasets hold mp locks)
        datamodule.dataset = dataset
    module, datamodule = plan.training_modules(module, datamodule)
    weights = folder / WEIGHTS
    trainer = _lightning_trainer(ctx, plan, module, folder, strategy, total, last, weights)
    ckpt_path = resume_checkpoint(last) if ctx.resume else None
    if ckpt_path:
        log.info("stage %s: resuming from %s", plan.name, ckpt_path)
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
    _fit(trainer, module, datamodule, ckpt_path)
    if hasattr(dataset, "report_skipped"):
        dataset.report_skipped()  # frames skipped (on_error=skip) and boxes dropped, per set
    steps = int(read_metadata(weights).get("steps", 0)) if weights.is_file() else 0
    return StageResult(plan.name, weights, steps, folder / "logs")


def previous_checkpoint(last: Path) -> Path:
    """The generation kept before `last.ckpt`."""
    return last.with_name("previous.ckpt")


def resume_checkpoint(last: Path) -> str | None:
    """The newest checkpoint of a unit that loads: `last.ckpt`, else `previous.ckpt` (with a
    warning), None when the unit never wrote one. A file that needs code to unpickle is refused
    (never skipped); when neither loads, a CheckpointError names both."""
    candidates = [p for p in (last, previous_checkpoint(last)) if p.is_file()]
    problems = []
    for path in candidates:
        problem = _checkpoint_problem(path)
        if problem is None:
            if path != last:
                log.warning("%s: %s; resuming from the generation before, %s",
                            last, problems[-1] if problems else "missing", path)  # fmt: skip
            return str(path)
        problems.append(problem)
    if problems:
        raise CheckpointError(
            f"cannot resume: {'; '.join(f'{p}: {m}' for p, m in zip(candidates, problems, strict=True))}"
        )
    return None


def _checkpoint_problem(path: Path) -> str | None:
    """Why `path` cannot be resumed from (None when it loads with weights_only=True)."""
    import torch

    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refused(path, exc) from None
    except Exception as exc:  # truncated / corrupt archives raise RuntimeError, EOFError, ...
        first = _first_line(exc)
        return f"corrupt checkpoint ({type(exc).__name__}: {first[:120]})"
    return None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _refused(path: Path | str | None, exc: BaseException) -> CheckpointError:
    """The error of a checkpoint that only loads by running code (never resumed from)."""
    return CheckpointError(
        f"{path}: refused to resume from it: it holds objects that only load by running "
        f"code ({_first_line(exc)}); DriveMTL's checkpoints hold tensors and plain values only"
    )


def _stage_dataset(ctx: RunContext, plan: StagePlan) -> tuple[Any, int]:
    """The unit's training dataset and its batches per epoch (an error when there are none)."""
    stage = plan.config
    world = ctx.devices * ctx.config.train.num_nodes
    dataset = build_dataset(plan.data, "train")
    sampler = SAMPLERS.get(stage.sampler)(
        dataset, stage.batch_size, rank=0, world_size=world, seed=ctx.config.seed,
        tasks=plan.tasks, **stage.sampler_options,
    )  # fmt: skip
    per_epoch = len(sampler)
    if per_epoch == 0:
        raise RecipeError(
            f"stage '{plan.name}': sets {plan.sets} give no batch of {stage.batch_size} "
            f"x {world} rank(s) ({len(dataset)} frames)"
        )
    return dataset, per_epoch


def _stage_module(
    ctx: RunContext, plan: StagePlan, model: nn.Module, per_epoch: int, total: int
) -> MultiTaskModule:
    """The Lightning module: the model, the stage's loss weighting, optimiser and schedule."""
    stage = plan.config
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
        max_nonfinite_steps=ctx.config.train.max_nonfinite_steps,
        optimizer_groups=list(plan.optimizers),
        grad_clip=stage.grad_clip,
    )
    return MultiTaskModule(model, weighting, settings)


def _lightning_trainer(
    ctx: RunContext,
    plan: StagePlan,
    module: MultiTaskModule,
    folder: Path,
    strategy: str,
    total: int,
    last: Path,
    weights: Path,
) -> L.Trainer:
    """A Lightning Trainer for one unit: periodic `last.ckpt`, final weights, loggers.

    Under manual optimisation (several optimisers) the module clips gradients itself, and
    Lightning counts each optimiser's step in `max_steps`."""
    train = ctx.config.train
    manual = not module.automatic_optimization
    optimizers = module.optimizer_count
    log_dir = folder / "logs"
    callbacks: list[Callback] = [
        PeriodicCheckpoint(last, train.checkpoint_every_n_steps),
        FinalWeights(weights, plan.name),
        LearningRateMonitor(logging_interval="step"),
        *ctx.callbacks,
    ]
    if ctx.progress:
        callbacks.append(StageProgressBar(plan.name))
    with _quiet_lightning():
        return L.Trainer(
            accelerator=train.accelerator,
            devices=ctx.devices,
            num_nodes=train.num_nodes,
            strategy=strategy,
            precision=ctx.precision,  # type: ignore[arg-type]
            max_steps=total * optimizers if manual else total,
            max_epochs=1,
            gradient_clip_val=None if manual else plan.config.grad_clip,
            deterministic=train.deterministic,
            logger=[
                TensorBoardLogger(log_dir, name="tensorboard"),
                CSVLogger(log_dir, name="csv"),
            ],
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=ctx.progress,
            log_every_n_steps=train.log_every_n_steps,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            use_distributed_sampler=False,
            default_root_dir=folder,
        )


def _fit(
    trainer: L.Trainer,
    module: MultiTaskModule,
    datamodule: StageDataModule,
    ckpt_path: str | None,
) -> None:
    """`trainer.fit`, without the warnings that do not apply to the engine's streams."""
    with warnings.catch_warnings(), _quiet_lightning():
        warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")
        try:  # resume never unpickles code: only tensors and plain containers load
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise _refused(ckpt_path, exc) from None


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


def run_recipe(
    config: RunConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    devices: int | None = None,
    precision: str | None = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    overwrite: bool = False,
) -> RunResult:
    """Train `config.recipe` stage by stage into `out_dir` (default: output_dir / name).

    With `resume`, finished stages are skipped and the interrupted one continues from its last
    checkpoint; the directory must come from the same config. Everything in the recipe is
    validated (tasks, sets, samplers, freezing patterns, init weights) before training starts.
    The run folder is locked for this process (`run_lock`): a second writer is refused; a
    non-empty folder without a run is written into only with `overwrite`.
    """
    out = Path(out_dir) if out_dir is not None else Path(config.output_dir) / config.name
    check_output_dir(out)
    devices = devices or config.train.devices
    precision = precision or config.train.precision
    L.seed_everything(config.seed, workers=False, verbose=False)
    probe = _build_model(config)
    plans = plan_for_model(config, probe, run_dir=out)
    created = not out.exists()
    acquire_run_lock(out)
    try:
        return _run_units(config, out, plans, resume, overwrite, devices, precision, progress,
                          callbacks)  # fmt: skip
    except Exception:
        if created and not is_secondary_rank() and _failed_start(out):
            shutil.rmtree(out, ignore_errors=True)  # nothing to resume: leave nothing behind
        raise
    finally:
        release_run_lock(out)


def _run_units(
    config: RunConfig,
    out: Path,
    plans: list[Unit],
    resume: bool,
    overwrite: bool,
    devices: int,
    precision: str,
    progress: bool,
    callbacks: Sequence[Callback],
) -> RunResult:
    """Run every unit not yet finished, recording each in `run.json` (rank 0 writes)."""
    state = _prepare_run_dir(config, out, resume, overwrite)
    context = RunContext(config, out, state, resume, devices, precision, progress, callbacks)
    results: list[StageResult] = []
    for unit in plans:
        done = state["stages"].get(unit.name)
        if done is not None:
            results.append(StageResult(unit.name, out / done["weights"], int(done.get("steps", 0))))
            continue
        result = unit.run(context)
        results.append(result)
        state["stages"][unit.name] = {
            "weights": str(result.weights.relative_to(out)),
            "steps": result.steps,
        }
        if context.is_zero:
            write_json(state, out / RUN_STATE)
    final = out / "final.safetensors"
    if context.is_zero:
        if not results[-1].weights.is_file():
            raise CheckpointError(f"final stage weights missing: {results[-1].weights}")
        shutil.copyfile(results[-1].weights, final)
        state["final"] = final.name
        write_json(state, out / RUN_STATE)
    return RunResult(out, final, results)
