"""The stage datamodule moves batches with `Batch.to` (and dicts of them for paired streams)."""

from __future__ import annotations

from unittest import mock

import torch

from drivemtl.engine.datamodule import StageDataModule
from drivemtl.structures import Sample, SampleMeta, collate


def _batch(name: str):
    meta = SampleMeta(name=name, image_set="s", orig_size=(2, 2))
    sample = Sample(image=torch.ones(3, 2, 2), meta=meta, tasks=frozenset({"semantic"}),
                    semantic=torch.zeros(2, 2, dtype=torch.long))  # fmt: skip
    return collate([sample], size_divisor=1)


def _module() -> StageDataModule:
    return StageDataModule(mock.Mock(), "set_round_robin", 1, ["semantic"], 1, 0, 0)


def test_batches_and_dicts_of_batches_go_through_batch_to() -> None:
    module, batch = _module(), _batch("a")
    with mock.patch.object(type(batch), "to", autospec=True, side_effect=lambda b, d: b) as to:
        assert module.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch
        paired = {"source": batch, "target": _batch("b")}
        moved = module.transfer_batch_to_device(paired, torch.device("cpu"), 0)
    assert set(moved) == {"source", "target"} and to.call_count == 3


def test_other_containers_use_lightnings_generic_transfer() -> None:
    items = [torch.ones(2), {"x": torch.zeros(1)}]
    moved = _module().transfer_batch_to_device(items, torch.device("cpu"), 0)
    assert torch.equal(moved[0], items[0]) and torch.equal(moved[1]["x"], items[1]["x"])
