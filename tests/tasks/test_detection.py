"""Detection task: overfitting, masked loss, boxes mapped back to the original image."""

from __future__ import annotations

import pytest
import torch
from batches import make_batch, overfit

from drivemtl.config.loader import ConfigError
from drivemtl.models.config import TaskConfig
from drivemtl.models.heads.detector import DetectionOutputs
from drivemtl.structures.bdd import DETECTION_CLASSES_10, THING_CLASSES
from drivemtl.structures.sample import SampleMeta
from drivemtl.tasks.detection import DetectionTask


def test_overfits_tiny_batch() -> None:
    first, last = overfit("detection", steps=40, lr=1e-2)
    assert last <= 0.2 * first


def test_class_lists_and_option_validation() -> None:
    assert DetectionTask().classes == THING_CLASSES
    ten = DetectionTask(TaskConfig(head={"num_classes": 10}))
    assert ten.classes == DETECTION_CLASSES_10
    with pytest.raises(ConfigError, match=r"model\.tasks\.detection\.head\.rpn\.nms"):
        DetectionTask(TaskConfig(head={"rpn": {"nms": 0.5}}))


def test_no_labelled_sample_gives_exact_zero() -> None:
    batch = make_batch(2, ("detection",), labeled=[False, False])
    loss = DetectionTask().loss(None, batch)  # outputs are not even looked at
    assert float(loss) == 0.0 and not loss.requires_grad


def test_postprocess_maps_boxes_to_original() -> None:
    batch = make_batch(1, ("detection",))
    batch.metas[0] = SampleMeta(
        name="a", image_set="s", orig_size=(128, 192), scale=(0.5, 0.5), flipped=True
    )
    outputs = DetectionOutputs(
        rpn=None,  # type: ignore[arg-type]
        class_logits=torch.zeros(0, 9),
        box_deltas=torch.zeros(0, 32),
        boxes=[torch.tensor([[10.0, 20.0, 30.0, 40.0]])],
        scores=[torch.tensor([0.9])],
        classes=[torch.tensor([2])],
    )
    (pred,) = DetectionTask().postprocess(outputs, batch)
    # un-flip in the 96-wide input: x -> 96 - x, then / 0.5
    assert torch.allclose(pred.detections.boxes, torch.tensor([[132.0, 40.0, 172.0, 80.0]]))
    assert pred.detections.classes.tolist() == [2]
    assert torch.allclose(pred.detections.scores, torch.tensor([0.9]))
