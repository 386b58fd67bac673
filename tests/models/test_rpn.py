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


def test_regression_loss_l1_and_smooth_l1_by_hand() -> None:
    """One positive anchor (its own gt, target deltas 0) among 16 non-overlapping anchors: all
    16 are sampled, and the regression is the sum over its 4 deltas / 16."""
    import pytest
    from pydantic import ValidationError

    deltas = torch.tensor([0.5, -0.05, 0.0, 2.0])
    beta = 1.0 / 9
    by_hand = {
        "l1": (0.5 + 0.05 + 0.0 + 2.0) / 16,
        "smooth_l1": ((0.5 - beta / 2) + 0.5 * 0.05**2 / beta + 0.0 + (2.0 - beta / 2)) / 16,
    }
    for kind, expected in by_hand.items():
        cfg = RPNConfig(anchor_sizes=(8,), aspect_ratios=(1.0,), batch_size_per_image=16,
                        reg_loss=kind)  # fmt: skip
        rpn = RPN(4, (16,), cfg)  # stride 16 > anchor size 8: no two anchors overlap
        out = rpn([torch.zeros(1, 4, 4, 4)], [(64, 64)], training=True)
        gt = out.anchors[0][5:6].clone()
        out.deltas[0] = torch.zeros_like(out.deltas[0])
        out.deltas[0][0, 5] = deltas
        _, reg = rpn_loss(out, [gt], [None], cfg, [0])
        assert float(reg) == pytest.approx(expected, abs=1e-7), kind
    assert RPNConfig().reg_loss == "smooth_l1"  # the default keeps existing configs' numbers
    with pytest.raises(ValidationError):
        RPNConfig(reg_loss="l2")
