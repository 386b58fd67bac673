import math

import pytest
import torch

from drivemtl.ops import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    generalized_box_iou,
)


def test_area_and_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [10.0, 10.0, 11.0, 12.0]])
    assert box_area(a).tolist() == [4.0, 1.0]
    assert box_area(b).tolist() == [4.0, 2.0]
    iou = box_iou(a, b)
    assert iou.shape == (2, 2)
    # [0,0,2,2] vs [1,1,3,3]: intersection 1, union 4 + 4 - 1 = 7.
    assert iou[0, 0].item() == pytest.approx(1 / 7)
    # [0,0,1,1] touches [1,1,3,3] only at a corner: zero intersection.
    assert iou[1, 0].item() == 0.0
    assert iou[:, 1].tolist() == [0.0, 0.0]
    assert box_iou(a, a).diagonal().tolist() == [1.0, 1.0]


def test_generalized_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [4.0, 0.0, 6.0, 2.0]])
    giou = generalized_box_iou(a, b)
    # Hull of the first pair is 3x3 = 9, union 7: 1/7 - 2/9.
    assert giou[0, 0].item() == pytest.approx(1 / 7 - 2 / 9)
    # Disjoint pair: IoU 0, hull 6x2 = 12, union 8: -(12 - 8) / 12.
    assert giou[0, 1].item() == pytest.approx(-4 / 12)
    with pytest.raises(ValueError, match="x2 < x1"):
        generalized_box_iou(torch.tensor([[2.0, 0.0, 1.0, 1.0]]), a)


def test_clip_and_format_conversions():
    boxes = torch.tensor([[-5.0, 3.0, 50.0, 120.0]])
    assert clip_boxes(boxes, (100, 40)).tolist() == [[0.0, 3.0, 40.0, 100.0]]
    assert box_xyxy_to_cxcywh(torch.tensor([[1.0, 2.0, 5.0, 10.0]])).tolist() == [
        [3.0, 6.0, 4.0, 8.0]
    ]
    rand = torch.rand(20, 4, dtype=torch.float64) * 50
    rand[:, 2:] += rand[:, :2]
    assert torch.allclose(box_cxcywh_to_xyxy(box_xyxy_to_cxcywh(rand)), rand)
    with pytest.raises(ValueError, match="last dimension 4"):
        box_area(torch.zeros(3, 5))


def test_encode_hand_computed_and_roundtrip():
    proposal = torch.tensor([[0.0, 0.0, 10.0, 20.0]], dtype=torch.float64)
    target = torch.tensor([[5.0, 0.0, 25.0, 20.0]], dtype=torch.float64)
    weights = (10.0, 10.0, 5.0, 5.0)
    deltas = encode_boxes(target, proposal, weights)
    # centres 5 -> 15 (dx = 10 / 10 * 10), 10 -> 10; width 10 -> 20 (dw = 5 * log 2), h same.
    expected = [10.0, 0.0, 5 * math.log(2.0), 0.0]
    assert deltas[0].tolist() == pytest.approx(expected)
    decoded = decode_boxes(deltas, proposal, weights)
    assert torch.allclose(decoded, target)

    gen = torch.Generator().manual_seed(0)
    props = torch.rand(50, 4, generator=gen, dtype=torch.float64) * 100
    props[:, 2:] = props[:, :2] + 1 + torch.rand(50, 2, generator=gen, dtype=torch.float64) * 50
    gts = props + torch.randn(50, 4, generator=gen, dtype=torch.float64) * 3
    gts[:, 2:] = torch.maximum(gts[:, 2:], gts[:, :2] + 1)
    roundtrip = decode_boxes(encode_boxes(gts, props, weights), props, weights)
    assert torch.allclose(roundtrip, gts, atol=1e-9)


def test_decode_clamps_scale_and_handles_class_specific_deltas():
    box = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    deltas = torch.tensor([[0.0, 0.0, 100.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    out = decode_boxes(deltas, box)
    assert out.shape == (1, 8)
    # Width clamps at exp(log(1000/16)) * 16 = 1000, centred at 8.
    assert out[0, :4].tolist() == pytest.approx([8 - 500.0, 0.0, 8 + 500.0, 16.0])
    assert out[0, 4:].tolist() == pytest.approx([0.0, 0.0, 16.0, 16.0])
    with pytest.raises(ValueError, match="multiple of 4"):
        decode_boxes(torch.zeros(1, 6), box)
