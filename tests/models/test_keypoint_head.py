"""Keypoint targets and decoding round-trip."""

from __future__ import annotations

import torch

from drivemtl.models.heads.keypoint_head import decode_keypoints, keypoint_targets


def test_targets_peak_at_the_joint_and_decode_back() -> None:
    boxes = torch.tensor([[10.0, 20.0, 66.0, 76.0]])  # 56 px: one heatmap pixel per pixel
    keypoints = torch.tensor(
        [[[30.5, 40.5, 2.0], [10.5, 21.5, 1.0], [100.0, 40.0, 2.0], [30, 30, 0]]]
    )
    targets, valid = keypoint_targets(keypoints, boxes, 56, sigma=2.0)
    assert valid.tolist() == [[True, True, False, False]]
    assert torch.isclose(targets[0, 0, 20, 20], torch.tensor(1.0))  # (30.5-10)-0.5 = 20
    assert targets[0, 2].abs().sum() == 0 and targets[0, 3].abs().sum() == 0
    decoded = decode_keypoints(targets, boxes)
    assert torch.allclose(decoded[0, 0], torch.tensor([30.5, 40.5, 1.0]))
    assert torch.allclose(decoded[0, 1], torch.tensor([10.5, 21.5, 1.0]))
