import sys

import numpy as np
import pytest
import torch

from drivemtl.ops import batched_nms, nms

NMS_MODULE = sys.modules["drivemtl.ops.nms"]


@pytest.fixture(params=["sweep", "kept_windows"])
def strategy(request, monkeypatch):
    """Force one of the two exact strategies (normally picked by candidate-pair count)."""
    limit = 10**9 if request.param == "sweep" else -1
    monkeypatch.setattr(NMS_MODULE, "_SWEEP_PAIRS_PER_BOX", limit)
    return request.param


def reference_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Textbook greedy NMS in float64: take the best live box, drop live boxes with IoU > threshold."""
    boxes = boxes.astype(np.float64)
    order = np.array(sorted(range(len(scores)), key=lambda i: (-scores[i], i)), dtype=np.int64)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.clip(
            np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]),
            0,
            None,
        )
        h = np.clip(
            np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]),
            0,
            None,
        )
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 for degenerate boxes
            iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(iou > threshold)]
    return keep


def clustered_boxes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes jittered around a few centres, so that suppression chains are long."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(12, 2, generator=gen, dtype=torch.float64) * 300
    pick = torch.randint(0, 12, (n,), generator=gen)
    ctr = centres[pick] + torch.randn(n, 2, generator=gen, dtype=torch.float64) * 8
    wh = 20 + torch.rand(n, 2, generator=gen, dtype=torch.float64) * 40
    boxes = torch.cat((ctr - wh / 2, ctr + wh / 2), dim=1)
    scores = torch.rand(n, generator=gen, dtype=torch.float64)
    return boxes, scores


def test_nms_hand_computed():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 0.0, 11.0, 10.0],
            [20.0, 20.0, 30.0, 30.0],
            [0.0, 0.0, 10.0, 5.0],
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # IoU(0,1) = 90 / 110 = 0.818; IoU(3,0) = 0.5 (not > 0.5); IoU(3,1) = 45 / 105.
    assert nms(boxes, scores, 0.5, impl="torch").tolist() == [3, 0, 2]
    assert nms(boxes, scores, 0.4, impl="torch").tolist() == [3, 2]
    assert nms(boxes, scores, 0.9, impl="torch").tolist() == [3, 0, 1, 2]


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nms_matches_float64_greedy_reference(threshold, dtype, strategy):
    boxes, scores = clustered_boxes(700, seed=int(threshold * 10))  # > one 256-box block
    expected = reference_nms(boxes.numpy(), scores.numpy(), threshold)
    kept = nms(boxes.to(dtype), scores.to(dtype), threshold, impl="torch")
    assert kept.tolist() == expected
    assert kept.dtype == torch.long


def test_ties_duplicates_and_degenerate_boxes(strategy):
    boxes, scores = clustered_boxes(600, seed=9)
    boxes[100:150] = boxes[:50]  # exact duplicates (IoU 1)
    scores[100:150] = scores[:50]  # equal scores: the lower index must win
    boxes[200:210, 2] = boxes[200:210, 0]  # zero width: IoU 0 or NaN, never suppressed
    for threshold in (0.5, 1.0):
        expected = reference_nms(boxes.numpy(), scores.numpy(), threshold)
        assert nms(boxes, scores, threshold, impl="torch").tolist() == expected


def test_batched_nms_only_suppresses_within_category(strategy):
    boxes, scores = clustered_boxes(500, seed=3)
    gen = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 4, (500,), generator=gen)
    kept = batched_nms(boxes, scores, labels, 0.5, impl="torch")
    expected = []
    for label in range(4):
        members = torch.nonzero(labels == label).squeeze(1)
        local = reference_nms(boxes[members].numpy(), scores[members].numpy(), 0.5)
        expected.extend(members[local].tolist())
    expected.sort(key=lambda i: -scores[i].item())
    assert kept.tolist() == expected
    # Two identical boxes of different classes both survive.
    same = torch.tensor([[0.0, 0.0, 5.0, 5.0], [0.0, 0.0, 5.0, 5.0]])
    both = batched_nms(same, torch.tensor([0.2, 0.9]), torch.tensor([0, 1]), 0.5, impl="torch")
    assert both.tolist() == [1, 0]


def test_nms_empty_and_bad_input():
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5, impl="torch")
    assert empty.shape == (0,) and empty.dtype == torch.long
    assert (
        batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), 0.5, impl="torch").numel()
        == 0
    )
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        nms(torch.tensor([[0.0, 0.0, float("nan"), 1.0]]), torch.ones(1), 0.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(torch.zeros(1, 4), torch.zeros(1), -0.1)
    with pytest.raises(ValueError, match="impl"):
        nms(torch.zeros(1, 4), torch.zeros(1), 0.5, impl="cuda")
