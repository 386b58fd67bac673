"""RPN: output layout, proposal clipping / NMS, and its loss on a hand-made case."""

from __future__ import annotations

import torch

from drivemtl.models.heads.rpn import RPN, RPNConfig, rpn_loss


def test_proposals_are_clipped_sorted_and_capped() -> None:
    torch.manual_seed(0)
    cfg = RPNConfig(anchor_sizes=(8, 16), pre_nms_topk_test=50, post_nms_topk_test=10)
    rpn = RPN(4, (4, 8), cfg)
    maps = [torch.randn(2, 4, 8, 12), torch.randn(2, 4, 4, 6)]
    out = rpn(maps, [(30, 40), (32, 48)], training=False)
    assert out.objectness[0].shape == (2, 8 * 12 * 3) and out.deltas[1].shape == (2, 4 * 6 * 3, 4)
    for boxes, size in zip(out.proposals, [(30, 40), (32, 48)], strict=True):
        assert 0 < len(boxes) <= 10
        assert bool((boxes[:, 0::2] <= size[1]).all()) and bool((boxes[:, 1::2] <= size[0]).all())
        assert bool((boxes >= 0).all())
    scores = out.proposal_scores[0]
    assert bool((scores[:-1] >= scores[1:]).all())


def test_loss_for_confident_correct_predictions_is_small() -> None:
    cfg = RPNConfig(anchor_sizes=(8,), aspect_ratios=(1.0,), batch_size_per_image=16)
    rpn = RPN(4, (4,), cfg)
    out = rpn([torch.zeros(1, 4, 4, 4)], [(16, 16)], training=True)
    anchors = out.anchors[0]
    gt = anchors[5:6].clone()  # exactly one anchor matches (IoU 1)
    target = torch.full_like(out.objectness[0], -20.0)
    target[0, 5] = 20.0
    out.objectness[0] = target
    out.deltas[0] = torch.zeros_like(out.deltas[0])
    cls, reg = rpn_loss(out, [gt], [None], cfg, [0])
    assert float(cls) < 1e-6 and float(reg) == 0.0
    out.objectness[0] = torch.zeros_like(target)
    cls, _ = rpn_loss(out, [gt], [None], cfg, [0])
    assert abs(float(cls) - float(torch.log(torch.tensor(2.0)))) < 1e-6
