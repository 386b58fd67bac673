"""Batch samplers over several image sets, the multi-task sampling schemes of the papers.

- `none`: one shuffled pool of every sample (batches mix sets).
- `uniform` / `weighted`: each step picks a task (uniformly / in proportion to the number of
  samples labelled for it), then one set providing it (in proportion to size), then a batch.
- `batch_round_robin`: tasks in turn, one batch each.
- `set_round_robin` (VTD): each batch from one set, sets in turn with smaller sets spread evenly over
  the epoch; every sample once per epoch (no oversampling unless `oversample=True`).

DDP: every rank builds the same global schedule from (seed, epoch) and takes its own slice of each
global batch of `batch_size * world_size` indices, so ranks see different samples and draw from the
same set at the same step.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

from torch.utils.data import Sampler

from drivemtl.data.dataset import MultiSetDataset
from drivemtl.registry import Registry

SAMPLERS: Registry[type[MultiSetBatchSampler]] = Registry("sampler")


class MultiSetBatchSampler(Sampler[list[int]]):
    """Base: set bookkeeping, per-epoch RNG and the rank slicing of global batches.

    `OPTIONS` names the keyword options a subclass accepts (a stage's `sampler_options`).
    """

    OPTIONS: tuple[str, ...] = ()

    def __init__(
        self,
        dataset: MultiSetDataset,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        drop_last: bool = True,
        tasks: list[str] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        wanted = None if tasks is None else set(tasks)
        self.sets = [
            name
            for name in dataset.sets
            if len(dataset.set_range(name)) > 0
            and (wanted is None or dataset.set_tasks(name) & wanted)
        ]
        if not self.sets:
            raise ValueError(f"no non-empty image set provides any of the tasks {tasks}")
        available = set().union(*(dataset.set_tasks(s) for s in self.sets))
        self.tasks = sorted(available if wanted is None else available & wanted)

    @property
    def global_batch(self) -> int:
        """Samples per step over all ranks."""
        return self.batch_size * self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for `epoch` (call before iterating, like DistributedSampler)."""
        self.epoch = epoch

    def _rng(self) -> random.Random:
        return random.Random(self.seed * 1_000_003 + self.epoch)

    def _slice(self, global_batch: list[int]) -> list[int]:
        """This rank's part of a global batch (padded by repetition to split evenly)."""
        per_rank = math.ceil(len(global_batch) / self.world_size)
        padded = list(global_batch)
        while len(padded) < per_rank * self.world_size:
            padded.extend(global_batch[: per_rank * self.world_size - len(padded)])
        return padded[self.rank * per_rank : (self.rank + 1) * per_rank]

    def _chunks(self, indices: list[int]) -> list[list[int]]:
        g = self.global_batch
        full = len(indices) // g
        chunks = [indices[k * g : (k + 1) * g] for k in range(full)]
        if not self.drop_last and len(indices) % g:
            chunks.append(indices[full * g :])
        return chunks

    def global_batches(self) -> list[list[int]]:
        """Every global batch of this epoch (identical on every rank)."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield self._slice(batch)

    def __len__(self) -> int:
        return len(self.global_batches())


@SAMPLERS.register("none")
class PooledBatchSampler(MultiSetBatchSampler):
    """One shuffled pool of the samples of every selected set."""

    def global_batches(self) -> list[list[int]]:
        """Shuffle all indices, cut into global batches."""
        indices = [i for s in self.sets for i in self.dataset.set_range(s)]
        self._rng().shuffle(indices)
        return self._chunks(indices)


class _SetStream:
    """Endless shuffled stream over one set's indices (reshuffled at each wrap)."""

    def __init__(self, indices: range, rng: random.Random) -> None:
        self.indices = list(indices)
        self.rng = rng
        self.order: list[int] = []

    def take(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            if not self.order:
                self.order = list(self.indices)
                self.rng.shuffle(self.order)
            out.append(self.order.pop())
        return out


class _TaskSampler(MultiSetBatchSampler):
    """Each step: choose a task, a set providing it (in proportion to size), then a batch."""

    def _num_steps(self) -> int:
        total = sum(len(self.dataset.set_range(s)) for s in self.sets)
        steps = total / self.global_batch
        return max(1, math.floor(steps) if self.drop_last else math.ceil(steps))

    def _providers(self, task: str) -> list[str]:
        return [s for s in self.sets if task in self.dataset.set_tasks(s)]

    def _pool_size(self, task: str) -> int:
        return sum(len(self.dataset.set_range(s)) for s in self._providers(task))

    def _choose_task(self, step: int, rng: random.Random) -> str:
        raise NotImplementedError

    def global_batches(self) -> list[list[int]]:
        """Schedule of (task -> set -> batch) steps for this epoch."""
        rng = self._rng()
        streams = {s: _SetStream(self.dataset.set_range(s), rng) for s in self.sets}
        batches = []
        for step in range(self._num_steps()):
            task = self._choose_task(step, rng)
            providers = self._providers(task)
            sizes = [len(self.dataset.set_range(s)) for s in providers]
            chosen = rng.choices(providers, weights=sizes)[0]
            batches.append(streams[chosen].take(self.global_batch))
        return batches


@SAMPLERS.register("uniform")
class UniformTaskBatchSampler(_TaskSampler):
    """Tasks drawn uniformly at random at each step."""

    def _choose_task(self, step: int, rng: random.Random) -> str:
        return rng.choice(self.tasks)


@SAMPLERS.register("weighted")
class WeightedTaskBatchSampler(_TaskSampler):
    """Tasks drawn in proportion to labelled samples x training epochs (LV-Adapter Sec. 3.2).

    `task_epochs` gives each task's epochs (its single-task schedule); every task's, or none
    (then all equal: weights are the labelled samples alone).
    """

    OPTIONS = ("task_epochs",)

    def __init__(
        self, *args: object, task_epochs: dict[str, float] | None = None, **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        epochs = dict(task_epochs or {})
        missing = [t for t in self.tasks if epochs and t not in epochs]
        if missing or any(v <= 0 for v in epochs.values()):
            raise ValueError(
                f"weighted sampler: task_epochs {epochs} must give a positive number of epochs "
                f"for every task {self.tasks} (missing: {missing})"
            )
        self.task_epochs = epochs

    def task_weights(self) -> list[float]:
        """Each task's sampling weight: labelled samples x epochs."""
        return [self._pool_size(t) * self.task_epochs.get(t, 1.0) for t in self.tasks]

    def _choose_task(self, step: int, rng: random.Random) -> str:
        return rng.choices(self.tasks, weights=self.task_weights())[0]


@SAMPLERS.register("batch_round_robin")
class BatchRoundRobinSampler(_TaskSampler):
    """Tasks in a fixed turn, one batch each."""

    def _choose_task(self, step: int, rng: random.Random) -> str:
        return self.tasks[step % len(self.tasks)]


@SAMPLERS.register("set_round_robin")
class SetRoundRobinSampler(MultiSetBatchSampler):
    """Each batch from one set; sets take turns, smaller sets' batches spread evenly (VTD)."""

    OPTIONS = ("oversample",)

    def __init__(self, *args: object, oversample: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.oversample = oversample

    def global_batches(self) -> list[list[int]]:
        """Each set cut into shuffled global batches, merged by evenly spaced positions."""
        rng = self._rng()
        per_set: dict[str, list[list[int]]] = {}
        for name in self.sets:
            indices = list(self.dataset.set_range(name))
            rng.shuffle(indices)
            per_set[name] = self._chunks(indices)
        if self.oversample:
            most = max(len(b) for b in per_set.values())
            for name, batches in per_set.items():
                stream = _SetStream(self.dataset.set_range(name), rng)
                while len(batches) < most:
                    batches.append(stream.take(self.global_batch))
        keyed = []
        for k, name in enumerate(self.sets):
            n = len(per_set[name])
            keyed.extend(((j + 0.5) / n, k, batch) for j, batch in enumerate(per_set[name]))
        keyed.sort(key=lambda item: (item[0], item[1]))
        return [batch for _, _, batch in keyed]
