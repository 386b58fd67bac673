"""The `mots` task: the join of track ids and instance masks, the config and ordering rules, the
MOTS evaluator on hand-made sequences (values computed by hand and through the bitmask files),
and a tiny detection + instance + mot + mots model tracking masks over three frames."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from batches import TINY_HEADS

from drivemtl.config.loader import ConfigError
from drivemtl.data import DataConfig, build_dataset
from drivemtl.data.png_codecs import encode_instance_rgba, write_png
from drivemtl.data.synthetic import generate_dataset
from drivemtl.data.writers import write_dense
from drivemtl.evaluation.seg_track import MOTSEvaluator, SegTrackEvaluator
from drivemtl.models import build_model
from drivemtl.models.config import ModelConfig, TaskConfig
from drivemtl.models.multitask import with_required
from drivemtl.structures.batch import collate
from drivemtl.structures.instances import Instances
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.sample import Sample, SampleMeta
from drivemtl.tasks import TASKS
from drivemtl.tasks.mots import join_track_ids

MOT_HEAD = {"channels": 16, "num_convs": 2, "norm_groups": 4, "fc_dim": 32, "embed_dim": 16,
            "rois_per_image": 64, "tracker": {"init_score": 0.0, "object_score": 0.0}}  # fmt: skip
H, W = 12, 16


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model_config(tasks: tuple[str, ...] = ("detection", "instance", "mot", "mots")) -> ModelConfig:
    heads = {"detection": TINY_HEADS["detection"], "instance": TINY_HEADS["instance"],
             "mot": MOT_HEAD, "mots": {}}  # fmt: skip
    return ModelConfig(
        backbone={"type": "resnet18", "width": 8, "norm": "gn"},
        neck={"type": "fpn", "out_channels": 16, "norm": "gn"},
        tasks={t: TaskConfig(head=heads[t]) for t in tasks},
    )


# ----------------------------------------------------------------------------- the join
def test_instances_get_the_ids_of_their_tracked_detections() -> None:
    detections = Instances(
        boxes=torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10], [40, 0, 50, 8]]),
        classes=torch.tensor([2, 0, 3, 2]),
        scores=torch.tensor([0.9, 0.8, 0.7, 0.6]),
        track_ids=torch.tensor([7, 3, 9, -1]),  # the last one the tracker did not track
    )
    # Instances in another order; one box off by float noise, one with no detection at all.
    instances = Instances(
        boxes=torch.tensor(
            [[20.0, 20, 30, 30.001], [0, 0, 10, 10], [0, 0, 10, 10], [40, 0, 50, 8], [60, 0, 70, 8]]
        ),
        classes=torch.tensor([0, 3, 2, 2, 2]),
        masks=torch.zeros(5, 4, 4, dtype=torch.bool),
    )
    ids = join_track_ids(instances, detections)
    assert ids.tolist() == [3, 9, 7, -1, -1]
    # A box that moved (IoU 0.9 < 0.99) is another object; a lower threshold joins it.
    moved = Instances(boxes=torch.tensor([[0.0, 0, 10, 9]]), classes=torch.tensor([2]))
    assert join_track_ids(moved, detections).tolist() == [-1]
    assert join_track_ids(moved, detections, min_iou=0.85).tolist() == [7]
    # One to one: two identical instances share one detection, the second gets none.
    twice = Instances(boxes=torch.tensor([[0.0, 0, 10, 10]] * 2), classes=torch.tensor([2, 2]))
    assert join_track_ids(twice, detections).tolist() == [7, -1]


def test_update_state_sets_the_instances_track_ids() -> None:
    task = TASKS.get("mots")()
    meta = SampleMeta(name="v/0.jpg", image_set="t", orig_size=(H, W), video="v", frame_index=0)
    pred = FramePrediction(
        meta=meta,
        detections=Instances(
            boxes=torch.tensor([[1.0, 1, 5, 5]]),
            classes=torch.tensor([1]),
            track_ids=torch.tensor([4]),
        ),
        instances=Instances(
            boxes=torch.tensor([[1.0, 1, 5, 5], [6, 6, 9, 9]]),
            classes=torch.tensor([1, 1]),
            masks=torch.ones(2, H, W, dtype=torch.bool),
        ),
    )
    task.update_state([pred], None, None, [{}])  # type: ignore[arg-type]
    assert pred.instances.track_ids.tolist() == [4, -1]
    assert pred.instances.masks.shape == (2, H, W)
    with pytest.raises(ValueError, match="mots needs the instance and mot predictions"):
        task.update_state([FramePrediction(meta=meta)], None, None, [{}])  # type: ignore[arg-type]


def test_mots_needs_mot_and_instance_and_has_no_parameters() -> None:
    with pytest.raises(ConfigError, match=r"model\.tasks\.mots: .*\['instance'\]"):
        build_model(_model_config(("detection", "mot", "mots")))
    with pytest.raises(ConfigError, match=r"model\.tasks\.mots: .*\['mot', 'instance'\]"):
        build_model(_model_config(("detection", "mots")))
    task = TASKS.get("mots")()
    assert task.default_head == "track_join" and task.group == "association"
    assert not list(task.build_head(None).parameters())  # type: ignore[arg-type]
    # Required tasks come first, whatever the requested order.
    tasks = {t: TASKS.get(t)() for t in ("mots",)}
    assert with_required(tasks, ["mots", "detection"]) == ["mot", "instance", "mots", "detection"]
    assert with_required(tasks, ["instance", "mots", "mot"]) == ["instance", "mot", "mots"]


# ----------------------------------------------------------------------------- the evaluator
def _square(x: int, y: int) -> torch.Tensor:
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[y : y + 4, x : x + 4] = True
    return mask


def _frame(k: int, ids: list[int], pred_ids: list[int], extra: bool = False):
    """Frame k of one video: two cars (gt ids), predicted with the same masks and `pred_ids`;
    `extra`: an untracked prediction on top (score 1.0) of the first car."""
    meta = SampleMeta(name=f"v/{k}.jpg", image_set="t", orig_size=(H, W), image_size=(H, W),
                      video="v", frame_index=k)  # fmt: skip
    masks = torch.stack([_square(1 + k, 2), _square(9, 6)])
    boxes = torch.tensor([[1.0 + k, 2, 5 + k, 6], [9, 6, 13, 10]])
    gt = Instances(boxes, torch.tensor([2, 2]), torch.tensor(ids), masks=masks)
    sample = Sample(image=torch.zeros(3, H, W), meta=meta, tasks=frozenset({"mots"}), instances=gt)
    p_masks, p_ids, scores = masks, torch.tensor(pred_ids), torch.tensor([0.9, 0.8])
    if extra:
        p_masks = torch.cat([masks, masks[:1]])
        p_ids, scores = torch.tensor([*pred_ids, -1]), torch.tensor([0.9, 0.8, 1.0])
        boxes = torch.cat([boxes, boxes[:1]])
    pred = FramePrediction(
        meta=meta,
        instances=Instances(
            boxes, torch.full((len(p_ids),), 2), p_ids, masks=p_masks, scores=scores
        ),
    )
    return sample, pred


def _evaluate(pred_ids: list[list[int]], extra: bool = False) -> dict[str, float]:
    evaluator = MOTSEvaluator()
    for k, ids in enumerate(pred_ids):
        sample, pred = _frame(k, [1, 2], ids, extra)
        evaluator.update([pred], collate([sample]))
    return evaluator.compute()


def test_evaluator_on_a_perfect_sequence() -> None:
    m = _evaluate([[5, 6]] * 3, extra=True)  # the untracked mask on top is not a track
    assert m["MOTA"] == pytest.approx(100.0) and m["IDF1"] == pytest.approx(100.0)
    assert m["MOTP"] == pytest.approx(100.0)
    assert (m["FP"], m["FN"], m["IDSw"]) == (0, 0, 0)
    for key in ("HOTA", "DetA", "AssA"):
        assert m[key] == pytest.approx(100.0)


def test_evaluator_on_one_id_switch() -> None:
    """Frame 2 gives car 1 a new id 7. CLEAR: 6 objects, 6 matches, 1 switch -> MOTA 5/6.
    IDF1: best id pairing car1-5 (2 frames) + car2-6 (3) -> IDTP 5, 2 * 5 / (6 + 6).
    HOTA (IoU 1 at every alpha): DetA 1; AssA = mean over the 6 matches of the pair's
    TPA / (TPA + FNA + FPA): car1-5 2/3 (twice), car1-7 1/3, car2-6 1 (three times) -> 7/9;
    HOTA = sqrt(DetA * AssA)."""
    m = _evaluate([[5, 6], [5, 6], [7, 6]])
    assert (m["FP"], m["FN"], m["IDSw"]) == (0, 0, 1)
    assert m["MOTA"] == pytest.approx(100 * 5 / 6)
    assert m["IDF1"] == pytest.approx(100 * 10 / 12)
    assert m["DetA"] == pytest.approx(100.0)
    assert m["AssA"] == pytest.approx(100 * 7 / 9)
    assert m["HOTA"] == pytest.approx(100 * math.sqrt(7 / 9))


def test_evaluator_agrees_with_the_written_bitmasks(tmp_path: Path) -> None:
    """The same sequence through the writer's MOTS bitmasks and the file evaluator."""
    seq = [[5, 6], [5, 6], [7, 6]]
    gt_paths, pred_paths = [], []
    for k, ids in enumerate(seq):
        sample, pred = _frame(k, [1, 2], ids, extra=True)
        written = write_dense(pred, tmp_path / "pred")
        pred_paths.append(next(p for p in written if "seg_track" in p.as_posix()))
        gt = sample.instances
        category = np.full((H, W), -1)
        index = np.zeros((H, W), np.int64)
        for j in range(len(gt)):
            category[gt.masks[j].numpy()] = int(gt.classes[j])
            index[gt.masks[j].numpy()] = int(gt.track_ids[j])
        gt_paths.append(tmp_path / "gt" / f"{k}.png")
        write_png(gt_paths[-1], encode_instance_rgba(category, index))
    files = SegTrackEvaluator()
    files.add_bitmask_video(gt_paths, pred_paths)
    expected, got = files.compute(), _evaluate(seq, extra=True)
    for key in ("MOTA", "MOTP", "IDF1", "IDSw", "HOTA", "DetA", "AssA"):
        assert got[key] == pytest.approx(expected[key]), key


# ----------------------------------------------------------------------------- a tiny model
@pytest.fixture(scope="module")
def tracking_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mots") / "ds"
    return generate_dataset(out, "bdd-sets", num_frames=12, size=(96, 64), seed=0, progress=False)


def test_a_tiny_model_gives_masks_their_track_ids(tracking_root: Path) -> None:
    data = DataConfig(
        sets={"tracking": {"root": str(tracking_root / "tracking"), "tasks": ["mot", "mots"]}},
        transforms={"resize": False, "flip": 0.0},
    )
    dataset = build_dataset(data, "train")
    torch.manual_seed(0)
    # Config order puts mots first: its update still runs after the tracker's.
    config = _model_config(("mots", "detection", "instance", "mot"))
    net = build_model(config).eval()
    assert not list(net.heads["mots"].parameters())
    batch = collate([dataset[0]])
    batch.references = []
    assert net.losses(batch, ["mots"])["mots"].item() == 0.0
    state, tracked = None, 0
    for k in range(3):
        frame = dataset[k]
        assert frame.meta.frame_index == k
        predictions, state = net.predict_with_state(collate([frame]), state, ["mots"])
        pred = predictions[0]
        inst, det = pred.instances, pred.detections
        assert inst is not None and inst.track_ids is not None and inst.masks is not None
        assert inst.masks.shape[1:] == frame.meta.orig_size
        expected = join_track_ids(inst, det)
        assert torch.equal(inst.track_ids, expected)
        tracked += int((inst.track_ids >= 0).sum())
        for box, cls, ident in zip(inst.boxes, inst.classes, inst.track_ids, strict=True):
            same = (det.boxes == box).all(dim=1) & (det.classes == cls)
            if ident >= 0:
                assert ident in det.track_ids[same].tolist()
    assert tracked > 0
    memory = state.videos[dataset[0].meta.video].tasks["mot"]["tracker"]
    assert memory.tracklets


def test_evaluate_model_reports_the_mots_metrics(tracking_root: Path, tmp_path: Path) -> None:
    from drivemtl.config.loader import validate_tree
    from drivemtl.engine.run_config import RunConfig
    from drivemtl.evaluation.model_eval import evaluate_model

    data = {"sets": {"tracking": {"root": str(tracking_root / "tracking"),
                                  "tasks": ["mot", "mots"], "clip": {"length": 2}}},
            "transforms": {"resize": False, "flip": 0.0}}  # fmt: skip
    tree = {"name": "mots", "model": _model_config().model_dump(), "data": data,
            "recipe": {"stages": [{"name": "s", "steps": 1, "batch_size": 1}]},
            "train": {"accelerator": "cpu"}}  # fmt: skip
    config = validate_tree(tree, {}, RunConfig, "<test>")
    torch.manual_seed(0)
    weights = tmp_path / "weights.pt"
    torch.save(build_model(config.model).state_dict(), weights)
    result = evaluate_model(config, weights, split="train", progress=False, resources=False)
    metrics = result.metrics["mots"]
    # MOTA / MOTP here are the mask versions (MOTSA / MOTSP), under the toolkit's keys.
    for key in ("HOTA", "DetA", "AssA", "MOTA", "MOTP", "IDF1", "IDSw"):
        assert key in metrics
    assert math.isfinite(metrics["MOTA"]) and math.isfinite(metrics["IDF1"])


def test_mots_ap_scores_the_tracked_masks() -> None:
    """VTD's MOTS AP: COCO mask AP of the tracked masks (the untracked one on top left out).
    Car 2 untracked in frame 0: 5 true masks of 6 at precision 1, so recall points 0..0.83 of
    COCO's 101 have precision 1: AP = 84 / 101."""
    assert _evaluate([[5, 6]] * 3, extra=True)["AP"] == pytest.approx(100.0)
    assert _evaluate([[5, -1], [5, 6], [5, 6]])["AP"] == pytest.approx(100 * 84 / 101)
