"""The DataLoader path: samplers + workers + collate give Batches with per-task labelled masks."""

from __future__ import annotations

import logging

import torch

from drivemtl.data import SAMPLERS, DataConfig, build_dataset, build_loader
from drivemtl.structures.batch import Batch


def test_loader_yields_batches_with_labelled_masks(tmp_path, bdd_set):
    bdd_set(tmp_path / "a", videos=2, frames=2)
    bdd_set(tmp_path / "b", videos=1, frames=2)
    cfg = DataConfig(
        sets={
            "a": {
                "root": str(tmp_path / "a"),
                "tasks": ["detection", "semantic", "flow"],
                "clip": {"sampling": "next"},
            },
            "b": {"root": str(tmp_path / "b"), "tasks": ["depth"], "clip": {"sampling": "next"}},
        },
        transforms={"heights": [16], "flip": 0.5, "crop": (16, 24)},
    )
    ds = build_dataset(cfg)
    sampler = SAMPLERS.get("set_round_robin")(ds, 2)
    batches = list(build_loader(ds, sampler, num_workers=2))
    assert len(batches) == 3
    for batch in batches:
        assert isinstance(batch, Batch) and batch.images.shape == (2, 3, 32, 32)
        assert batch.reference is not None and batch.reference.images.shape == (2, 3, 32, 32)
        if batch.metas[0].image_set == "a":
            assert batch.labeled["detection"].all() and batch.labeled["semantic"].all()
            assert batch.semantic.shape == (2, 32, 32) and batch.depth is None
            assert (batch.semantic[:, 16:] == 255).all()  # padding is ignore
            # frame 0 of each video has flow, frame 1 (last) has none
            has_flow = [m.frame_index == 0 for m in batch.metas]
            assert batch.is_labeled("flow").tolist() == has_flow
        else:
            assert batch.labeled["depth"].all() and batch.semantic is None
            assert batch.depth.shape == (2, 32, 32) and (batch.depth[:, :16, :24] > 0).all()
        # normalised images (ImageNet statistics)
        assert batch.images[:, :, :16, :24].abs().max() < 3.0


def test_loader_reports_skipped_frames_from_workers(tmp_path, bdd_set, caplog):
    bdd_set(tmp_path, videos=2, frames=2)
    (tmp_path / "images/vid0001/vid0001-0000000.jpg").unlink()
    cfg = DataConfig(sets={"s": {"root": str(tmp_path), "tasks": ["detection"]}},
                     on_error="skip", transforms={"resize": False})  # fmt: skip
    ds = build_dataset(cfg)
    caplog.set_level(logging.WARNING, logger="drivemtl")
    loader = build_loader(ds, SAMPLERS.get("none")(ds, 2), num_workers=2)
    frames = [m.name for batch in loader for m in batch.metas]
    assert len(frames) == 4 and "vid0001/vid0001-0000000.jpg" not in frames
    assert ds.skipped == 1
    assert "skipped 1 frame(s)" in caplog.text
    assert torch.is_tensor(next(iter(loader)).images)
