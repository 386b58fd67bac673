"""The Lightning side of the `uda_adversarial` stage kind: the two-player training step and the
paired source / target data (see `drivemtl.engine.adversarial` for the method).

One step, under manual optimisation:
1. the network: supervised multi-task loss on the source batch plus, on the target batch,
   sum_t lambda_t BCE(D_t(Q_t(target)), 1) with the discriminators frozen; one backward, then
   every network optimiser steps (gradients clipped per optimiser by `grad_clip`);
2. the discriminators: BCE(D_t(Q_t(source)), 1) + BCE(D_t(Q_t(target)), 0) on the detached
   maps; their own optimiser steps.
Q_t is task t's `domain_map` at input size. A NaN / Inf loss skips the whole step (NaN guard).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from drivemtl.data import SAMPLERS, build_dataset
from drivemtl.engine.adversarial import AdaptationError
from drivemtl.engine.datamodule import StageDataModule
from drivemtl.engine.module import MultiTaskModule
from drivemtl.engine.stages import build_optimizer, no_decay_names
from drivemtl.engine.step import multitask_step
from drivemtl.engine.stream import SeededDataset, StreamBatchSampler
from drivemtl.log import get_logger
from drivemtl.models.discriminators import DISCRIMINATORS
from drivemtl.models.summary import blank_batch
from drivemtl.structures.batch import Batch, collate

if TYPE_CHECKING:
    from drivemtl.engine.adversarial import AdversarialOptions, AdversarialPlan

log = get_logger(__name__)

SOURCE, TARGET = "source", "target"


def domain_maps(
    model: nn.Module, outputs: Any, batch: Batch, tasks: list[str]
) -> dict[str, Tensor]:
    """Task -> its domain map at the batch's input size, for the tasks `outputs` holds."""
    size = (int(batch.images.shape[-2]), int(batch.images.shape[-1]))
    maps = {}
    for task in tasks:
        if outputs is None or task not in outputs:
            continue
        m = model.tasks[task].domain_map(outputs[task], batch)
        if m is None:
            raise ValueError(f"task {task!r} gives no domain map for its discriminator")
        if tuple(m.shape[-2:]) != size:
            m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        maps[task] = m
    return maps


def bce_to(logits: Tensor, label: float) -> Tensor:
    """Mean binary cross entropy of patch logits against a constant domain label."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


class AdversarialModule(MultiTaskModule):
    """MultiTaskModule plus one discriminator per adapted task and their optimiser (the last)."""

    def __init__(
        self,
        base: MultiTaskModule,
        adapt: list[str],
        options: AdversarialOptions,
    ) -> None:
        super().__init__(base.model, base.weighting, base.settings)
        if self.weighting.needs_task_gradients:
            raise AdaptationError(
                f"stage '{self.settings.name}': the uda_adversarial kind combines the loss "
                "weighting's total with the adversarial losses; a weighting that sets the "
                "update from per-task gradients (PCGrad, MGDA) is not supported with it"
            )
        self.automatic_optimization = False
        self.adapt = list(adapt)
        self.options = options
        self.discriminators = nn.ModuleDict(
            {
                task: DISCRIMINATORS.get(options.discriminator.type)(
                    options.discriminator, self._map_channels(task)
                )
                for task in self.adapt
            }
        )

    def _map_channels(self, task: str) -> int:
        """Channels of `task`'s domain map, from a forward of the head on a tiny input."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                device = next(self.model.parameters()).device
                batch = blank_batch((64, 64), device)
                outputs = self.model(batch, [task], targets=False)
                return int(self.model.tasks[task].domain_map(outputs[task], batch).shape[1])
        finally:
            self.model.train(was_training)

    @property
    def optimizer_count(self) -> int:
        """The network's optimisers plus the discriminators'."""
        return super().optimizer_count + 1

    def configure_optimizers(self) -> Any:
        """The network's optimiser(s) and the discriminators' (last), each with the schedule."""
        named = [(f"discriminators.{n}", p) for n, p in self.discriminators.named_parameters()]
        exempt = {f"discriminators.{n}" for n in no_decay_names(self.discriminators)}
        optimizers = [
            *self.model_optimizers(),
            build_optimizer(named, self.options.discriminator_optimizer, exempt),
        ]
        return optimizers, [self._schedule(optimizer) for optimizer in optimizers]

    def train(self, mode: bool = True) -> AdversarialModule:
        """Switch mode (frozen normalisation layers of the network stay in eval)."""
        super().train(mode)
        return self

    def on_train_batch_start(self, batch: dict[str, Batch], batch_idx: int) -> None:
        """Count consumed batches (one source and one target batch per step)."""
        self.batches_consumed = batch_idx + 1

    def on_train_batch_end(self, outputs: Any, batch: dict[str, Batch], batch_idx: int) -> None:
        """Log throughput on the source images."""
        super().on_train_batch_end(outputs, batch[SOURCE], batch_idx)

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> Tensor | None:
        """One network update (supervised + adversarial) and one discriminator update."""
        source, target = batch[SOURCE], batch[TARGET]
        out = multitask_step(
            self.model, self.weighting, source, self.settings.tasks, keep_outputs=True
        )
        target_out = self.model(target, self.adapt, targets=False)
        src_maps = domain_maps(self.model, out.outputs, source, self.adapt)
        tgt_maps = domain_maps(self.model, target_out, target, self.adapt)
        self.discriminators.requires_grad_(False)
        adversarial = {t: bce_to(self.discriminators[t](m), 1.0) for t, m in tgt_maps.items()}
        self.discriminators.requires_grad_(True)
        loss = out.total + sum(self.options.weight(t) * v for t, v in adversarial.items())
        if not self._all_finite(loss):
            self.guard.record_nonfinite(
                {**out.losses, **{f"adv_{t}": v for t, v in adversarial.items()}},
                self.global_step,
                self.settings.name,
            )
            self.log("train/skipped_steps", float(self.guard.skipped_total), sync_dist=False)
            return None
        self.guard.consecutive = 0
        *network, disc = self._optimizer_list()
        self.backward_and_step(network, loss)
        d_losses = {t: bce_to(self.discriminators[t](m.detach()), 1.0) for t, m in src_maps.items()}
        for t, m in tgt_maps.items():
            d_losses[t] = d_losses.get(t, 0.0) + bce_to(self.discriminators[t](m.detach()), 0.0)
        self.backward_and_step([disc], sum(d_losses.values()))
        self.step_schedules()
        self._log_step(out, source, adversarial, d_losses)
        return loss.detach()

    def _all_finite(self, loss: Tensor) -> bool:
        """Whether the loss is finite on every rank."""
        bad = torch.tensor(0.0 if bool(torch.isfinite(loss.detach())) else 1.0, device=loss.device)
        if dist.is_available() and dist.is_initialized() and self.trainer.world_size > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        return float(bad) == 0.0

    def _log_step(
        self, out: Any, source: Batch, adversarial: dict[str, Tensor], d_losses: dict[str, Any]
    ) -> None:
        self.log_step(out, len(source), adv=adversarial, disc=d_losses)


class PairedBatchSampler(Sampler[list[tuple[str, int, int]]]):
    """Zips a source and a target stream: each batch is the source batch then the target batch,
    items tagged with their domain."""

    def __init__(self, source: StreamBatchSampler, target: StreamBatchSampler) -> None:
        self.source = source
        self.target = target

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self):
        for src, tgt in zip(self.source, self.target, strict=False):
            yield [(SOURCE, i, s) for i, s in src] + [(TARGET, i, s) for i, s in tgt]


class PairedDataset(Dataset[Any]):
    """Reads `(domain, index, seed)` items from the source or the target dataset (seeded)."""

    def __init__(self, source: Dataset[Any], target: Dataset[Any]) -> None:
        self.parts = {SOURCE: SeededDataset(source), TARGET: SeededDataset(target)}

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts.values())

    def __getitem__(self, item: tuple[str, int, int]) -> tuple[str, Any]:
        domain, index, seed = item
        return domain, self.parts[domain][(index, seed)]


def collate_paired(items: list[tuple[str, Any]], size_divisor: int) -> dict[str, Batch]:
    """Two batches, {source, target}, from tagged samples."""
    return {
        domain: collate([s for d, s in items if d == domain], size_divisor=size_divisor)
        for domain in (SOURCE, TARGET)
    }


class PairedDataModule(StageDataModule):
    """The stage's source stream plus a target stream of the same length (images only)."""

    def __init__(self, base: StageDataModule, plan: AdversarialPlan, batch_size: int) -> None:
        super().__init__(
            base.data,
            base.sampler_name,
            base.batch_size,
            base.tasks,
            base.total_batches,
            base.seed,
            base.stage_index,
            base.num_workers,
        )
        self.dataset = base.dataset
        assert plan.target_data is not None
        self.target_data = plan.target_data
        self.target_batch_size = batch_size
        self.target_dataset: Any = None
        self.where = f"stage '{plan.name}'"

    def setup(self, stage: str) -> None:
        """Build the source and the target datasets (in every process)."""
        super().setup(stage)
        if self.target_dataset is None:
            self.target_dataset = build_dataset(self.target_data, "train")
            if len(self.target_dataset) == 0:
                raise ValueError(
                    f"{self.where}: the target sets {sorted(self.target_data.sets)} hold no image"
                )

    def train_dataloader(self) -> DataLoader:
        """DataLoader over (source batch, target batch) pairs, resumable like the source."""
        self.setup("fit")
        rank, world = self.trainer.global_rank, self.trainer.world_size
        source = SAMPLERS.get(self.sampler_name)(
            self.dataset, self.batch_size, rank=rank, world_size=world, seed=self.seed,
            tasks=self.tasks,
        )  # fmt: skip
        target = SAMPLERS.get("none")(
            self.target_dataset, self.target_batch_size, rank=rank, world_size=world,
            seed=self.seed + 1, drop_last=False,
        )  # fmt: skip
        keys = (self.seed, self.stage_index, rank)
        streams = PairedBatchSampler(
            StreamBatchSampler(source, self.total_batches, self.start, seed_keys=keys),
            StreamBatchSampler(target, self.total_batches, self.start, seed_keys=(*keys, 1)),
        )
        return DataLoader(
            PairedDataset(self.dataset, self.target_dataset),
            batch_sampler=streams,
            num_workers=self.num_workers,
            collate_fn=partial(collate_paired, size_divisor=self.data.size_divisor),
            persistent_workers=False,
        )


def _warn_target_labels(plan: AdversarialPlan) -> None:
    """One warning per target set that carries labels: they are not read."""
    for name, tasks in plan.target_labels.items():
        if tasks:
            log.warning(
                "stage %s: target set '%s' carries labels for %s; the adversarial stage reads "
                "its images only and never trains on them",
                plan.name,
                name,
                ", ".join(tasks),
            )


def adversarial_modules(
    plan: AdversarialPlan, module: MultiTaskModule, datamodule: StageDataModule
) -> tuple[AdversarialModule, PairedDataModule]:
    """The adversarial module and the paired data module of `plan`, from the engine's own."""
    assert plan.options is not None
    _warn_target_labels(plan)
    batch = plan.options.target_batch_size or plan.config.batch_size
    adversarial = AdversarialModule(module, plan.adapt, plan.options)
    return adversarial, PairedDataModule(datamodule, plan, batch)


__all__ = [
    "AdversarialModule",
    "PairedDataModule",
    "adversarial_modules",
    "bce_to",
    "domain_maps",
]
