"""Multi-set batch samplers: coverage, one set per step on every rank, DDP slicing, task mixes."""

from __future__ import annotations

from collections import Counter

import pytest

from drivemtl.data.samplers import SAMPLERS


class _Sets:
    """The part of MultiSetDataset that samplers use: set names, index ranges and tasks."""

    def __init__(self, sizes: dict[str, int], tasks: dict[str, set[str]]) -> None:
        self.sizes, self._tasks = sizes, tasks
        self.sets = list(sizes)
        self.starts = {}
        start = 0
        for name, n in sizes.items():
            self.starts[name] = start
            start += n

    def set_range(self, name: str) -> range:
        return range(self.starts[name], self.starts[name] + self.sizes[name])

    def set_tasks(self, name: str) -> frozenset[str]:
        return frozenset(self._tasks[name])

    def set_of(self, i: int) -> str:
        return next(n for n in self.sets if i in self.set_range(n))


DATA = _Sets(
    {"det": 48, "seg": 16, "track": 24},
    {"det": {"detection", "drivable"}, "seg": {"semantic"}, "track": {"mot", "detection"}},
)


def _all_ranks(name, world=2, bs=4, **kw):
    return [SAMPLERS.get(name)(DATA, bs, rank=r, world_size=world, **kw) for r in range(world)]


def test_registry_names():
    assert set(SAMPLERS.names()) == {
        "none", "uniform", "weighted", "batch_round_robin", "set_round_robin",
    }  # fmt: skip


def test_set_round_robin_covers_each_sample_once_one_set_per_step():
    ranks = _all_ranks("set_round_robin")
    steps = list(zip(*[list(s) for s in ranks], strict=True))
    assert len(steps) == len(ranks[0]) == (48 + 16 + 24) // 8
    seen = []
    order = []
    for step in steps:
        sets = {DATA.set_of(i) for batch in step for i in batch}
        assert len(sets) == 1  # every rank draws from the same set at this step
        order.append(sets.pop())
        a, b = step
        assert len(a) == len(b) == 4 and not set(a) & set(b)  # ranks see different samples
        seen.extend(a + b)
    assert sorted(seen) == list(range(88))  # each sample exactly once, no oversampling
    assert Counter(order) == {"det": 6, "seg": 2, "track": 3}
    # smaller sets spread evenly at positions (j + 0.5) / n: det 1/12, 3/12, ..; seg 1/4, 3/4;
    # track 1/6, 1/2, 5/6 (ties: set order)
    assert order == ["det", "track", "det", "seg", "det", "track", "det", "det", "seg", "track",
                     "det"]  # fmt: skip


def test_set_round_robin_equal_sets_take_turns_and_oversample():
    data = _Sets({"a": 8, "b": 8, "c": 4}, {"a": {"x"}, "b": {"y"}, "c": {"z"}})
    sampler = SAMPLERS.get("set_round_robin")(data, 2)
    order = [data.set_of(batch[0]) for batch in sampler]
    assert order == ["a", "b", "c", "a", "b", "a", "b", "c", "a", "b"]
    assert Counter(order) == {"a": 4, "b": 4, "c": 2}
    over = SAMPLERS.get("set_round_robin")(data, 2, oversample=True)
    assert Counter(data.set_of(b[0]) for b in over) == {"a": 4, "b": 4, "c": 4}


def test_epochs_reshuffle_deterministically():
    a = SAMPLERS.get("set_round_robin")(DATA, 4, seed=1)
    b = SAMPLERS.get("set_round_robin")(DATA, 4, seed=1)
    first = list(a)
    assert first == list(b)
    a.set_epoch(1)
    second = list(a)
    assert second != first
    assert sorted(i for b in second for i in b) == sorted(i for b in first for i in b)


def test_none_is_one_pool_and_drop_last():
    ranks = _all_ranks("none", world=2, bs=5)
    batches = [b for s in ranks for b in s]
    assert len(ranks[0]) == 88 // 10
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) == 80
    assert any(len({DATA.set_of(i) for i in b}) > 1 for b in batches)  # sets mix in a batch
    keep = SAMPLERS.get("none")(DATA, 5, rank=1, world_size=2, drop_last=False)
    assert len(keep) == 9 and len(list(keep)[-1]) == 4  # 8 leftover samples split 4 / 4


@pytest.mark.parametrize("name", ["uniform", "weighted", "batch_round_robin"])
def test_task_samplers_one_set_per_step_and_providers_only(name):
    ranks = _all_ranks(name, tasks=["detection", "semantic"])
    for a, b in zip(*ranks, strict=True):
        sets = {DATA.set_of(i) for i in a + b}
        assert len(sets) == 1 and not set(a) & set(b)


def test_task_frequencies():
    data = _Sets({"a": 300, "b": 100}, {"a": {"detection"}, "b": {"semantic"}})
    counts = {}
    for name in ("uniform", "weighted", "batch_round_robin"):
        sampler = SAMPLERS.get(name)(data, 1, seed=3)
        counts[name] = Counter(data.set_of(b[0]) for b in sampler)
    assert counts["batch_round_robin"] == {"a": 200, "b": 200}
    assert abs(counts["uniform"]["a"] - 200) < 40  # binomial(400, 1/2): sd 10
    assert abs(counts["weighted"]["a"] - 300) < 40  # binomial(400, 3/4): sd 8.7
    order = [data.set_of(b[0]) for b in SAMPLERS.get("batch_round_robin")(data, 1)]
    assert order[:4] == ["a", "b", "a", "b"]


def test_weighted_task_epochs_scale_the_weights():
    """LV-Adapter's weights: labelled images x epochs; 300 x 1 against 100 x 6 -> 1 : 2."""
    data = _Sets({"a": 300, "b": 100}, {"a": {"detection"}, "b": {"semantic"}})
    sampler = SAMPLERS.get("weighted")(data, 1, seed=3, task_epochs={"detection": 1, "semantic": 6})
    assert sampler.task_weights() == [300.0, 600.0]  # tasks sorted: detection, semantic
    counts = Counter(data.set_of(b[0]) for b in sampler)
    assert abs(counts["b"] - 267) < 40  # binomial(400, 2/3): sd 9.4
    with pytest.raises(ValueError, match=r"missing: \['semantic'\]"):
        SAMPLERS.get("weighted")(data, 1, task_epochs={"detection": 2})
    with pytest.raises(ValueError, match="positive"):
        SAMPLERS.get("weighted")(data, 1, task_epochs={"detection": 2, "semantic": 0})


def test_samplers_declare_their_options():
    assert SAMPLERS.get("weighted").OPTIONS == ("task_epochs",)
    assert SAMPLERS.get("set_round_robin").OPTIONS == ("oversample",)
    assert SAMPLERS.get("none").OPTIONS == ()


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank 2 is outside world_size 2"):
        SAMPLERS.get("none")(DATA, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="no non-empty image set provides"):
        SAMPLERS.get("none")(DATA, 2, tasks=["flow"])
    with pytest.raises(KeyError, match="known: batch_round_robin"):
        SAMPLERS.get("round_robin")
