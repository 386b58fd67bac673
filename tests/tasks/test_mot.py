"""The `mot` task: a tiny detection + MOT model trained for a few steps on clips of the synthetic
tracking set, tracking with the memory in the inference state, an exact zero for unlabelled
images, config errors, and `evaluate_model` reporting the MOT metrics."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from batches import TINY_HEADS

from drivemtl.config.loader import ConfigError, validate_tree
from drivemtl.data import DataConfig, build_dataset
from drivemtl.data.synthetic import generate_dataset
from drivemtl.engine.run_config import RunConfig
from drivemtl.evaluation.model_eval import evaluate_model
from drivemtl.models import build_model
from drivemtl.models.config import ModelConfig, TaskConfig
from drivemtl.ops.boxes import box_iou
from drivemtl.ops.embedding_tracker import TrackerMemory
from drivemtl.structures.batch import collate
from drivemtl.tasks import TASKS

MOT_HEAD = {"channels": 16, "num_convs": 2, "norm_groups": 4, "fc_dim": 32, "embed_dim": 16,
            "rois_per_image": 64}  # fmt: skip
# Every non-duplicate detection of an untrained detector starts or continues a track.
EAGER = {"init_score": 0.0, "object_score": 0.0}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops run faster without thread hand-offs (and on a loaded machine, much faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tracking_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mot") / "ds"
    return generate_dataset(out, "bdd-sets", num_frames=12, size=(96, 64), seed=0, progress=False)


def _data(root: Path) -> dict:
    return {
        "sets": {
            "tracking": {"root": str(root / "tracking"), "tasks": ["detection", "mot"],
                         "clip": {"length": 2}},
        },
        "transforms": {"resize": False, "flip": 0.0},
    }  # fmt: skip


def _model_config(tracker: dict | None = None) -> ModelConfig:
    return ModelConfig(
        backbone={"type": "resnet18", "width": 8, "norm": "gn"},
        neck={"type": "fpn", "out_channels": 16, "norm": "gn"},
        tasks={
            "detection": TaskConfig(head=TINY_HEADS["detection"]),
            "mot": TaskConfig(head={**MOT_HEAD, "tracker": tracker or {}}),
        },
    )


def test_task_is_registered_with_the_quasi_dense_head() -> None:
    task = TASKS.get("mot")()
    assert task.default_head == "quasi_dense" and task.group == "association"
    assert task.options.embed_weight == 0.25 and task.options.aux_weight == 1.0
    assert task.options.positive_iou == 0.7 and task.options.rois_per_image == 256
    assert task.tracker.config.init_score == 0.7
    with pytest.raises(ConfigError, match="tracker: unknown option"):
        TASKS.get("mot")(TaskConfig(head={"tracker": {"init": 0.5}}))


def test_mot_alone_builds_a_support_detector() -> None:
    config = _model_config()
    config.tasks.pop("detection")
    config.tasks["mot"].head["detector"] = TINY_HEADS["detection"]
    net = build_model(config)
    assert set(net.support) == {"detection"} and net.support_owner == {"detection": "mot"}


def test_a_tiny_model_trains_on_clips_and_tracks(tracking_root: Path) -> None:
    dataset = build_dataset(DataConfig(**_data(tracking_root)), "train")
    assert len(dataset) >= 3
    torch.manual_seed(0)
    net = build_model(_model_config(EAGER))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    batch = collate([dataset[0], dataset[1]])
    assert batch.reference is not None and batch.is_labeled("mot").all()
    net.train()
    for _ in range(3):
        losses = net.losses(batch)
        values = [float(v.detach()) for v in losses.values()]
        assert all(math.isfinite(v) for v in values) and float(losses["mot"].detach()) > 0
        optimizer.zero_grad()
        sum(losses.values()).backward()
        head = net.heads["mot"]
        assert head.embed.weight.grad.abs().sum() > 0
        assert head.convs[0].weight.grad.abs().sum() > 0
        optimizer.step()
    net.eval()
    state, ids = None, []
    frames = [dataset[i] for i in range(3)]
    assert [f.meta.frame_index for f in frames] == [0, 1, 2]
    for frame in frames:
        predictions, state = net.predict_with_state(collate([frame]), state, ["detection", "mot"])
        det = predictions[0].detections
        assert det.track_ids is not None and len(det.track_ids) == len(det.boxes)
        ids.append(det.track_ids)
    memory = state.videos[frames[0].meta.video].tasks["mot"]["tracker"]
    assert isinstance(memory, TrackerMemory) and memory.tracklets
    assert (ids[0] >= 0).any() and bool((ids[0] >= -2).all())
    first = set(ids[0][ids[0] >= 0].tolist())
    assert first == set(range(len(first)))  # new tracks numbered from 0
    assert memory.next_id >= len(first)


def test_a_static_scene_keeps_its_ids(tracking_root: Path) -> None:
    """With embeddings that tell boxes apart (scaled, normalised RoI features in place of the
    untrained head), one frame shown three times keeps every distinct box's id. (Boxes the
    untrained detector reports twice, with two classes, share their embedding and split the
    bi-softmax; they are left out.)"""
    dataset = build_dataset(DataConfig(**_data(tracking_root)), "train")
    torch.manual_seed(0)
    net = build_model(_model_config(EAGER)).eval()
    net.heads["mot"].embeddings = lambda pooled: 30.0 * F.normalize(pooled.flatten(1), dim=1)
    state, ids = None, []
    for k in range(3):
        frame = dataset[0]
        frame.meta = replace(frame.meta, frame_index=k)
        predictions, state = net.predict_with_state(collate([frame]), state, ["detection", "mot"])
        ids.append(predictions[0].detections.track_ids)
    boxes = predictions[0].detections.boxes
    overlap = box_iou(boxes, boxes).fill_diagonal_(0).max(dim=1).values
    distinct = overlap < 0.9
    assert int(distinct.sum()) >= 5
    assert (ids[0][distinct] >= 0).all()
    assert torch.equal(ids[1][distinct], ids[0][distinct])
    assert torch.equal(ids[2][distinct], ids[0][distinct])


def test_an_unlabelled_clip_contributes_an_exact_zero(tracking_root: Path) -> None:
    dataset = build_dataset(DataConfig(**_data(tracking_root)), "train")
    net = build_model(_model_config())
    batch = collate([dataset[0]])
    batch.labeled["mot"] = torch.tensor([False])
    loss = net.losses(batch, ["mot"])["mot"]
    assert loss.item() == 0.0 and not loss.requires_grad
    # Labelled frames without a reference frame: the config lacks `clip`, said by name.
    batch = collate([dataset[0]])
    batch.references = []
    with pytest.raises(ValueError, match="trains on clips"):
        net.losses(batch, ["mot"])
    # Without track ids an image is not labelled for MOT either.
    batch = collate([dataset[0]])
    batch.instances[0].track_ids = None
    assert not net.tasks["mot"].labeled(batch).any()


def test_evaluate_model_reports_the_mot_metrics(tracking_root: Path, tmp_path: Path) -> None:
    model = _model_config(EAGER).model_dump()
    tree = {"name": "mot", "model": model, "data": _data(tracking_root),
            "recipe": {"stages": [{"name": "s", "steps": 1, "batch_size": 1}]},
            "train": {"accelerator": "cpu"}}  # fmt: skip
    config = validate_tree(tree, {}, RunConfig, "<test>")
    torch.manual_seed(0)
    weights = tmp_path / "weights.pt"
    torch.save(build_model(config.model).state_dict(), weights)
    result = evaluate_model(config, weights, split="train", progress=False, resources=False)
    metrics = result.metrics["mot"]
    for key in ("HOTA", "DetA", "AssA", "MOTA", "IDF1", "MOTP"):
        assert key in metrics
    assert math.isfinite(metrics["MOTA"]) and math.isfinite(metrics["HOTA"])
