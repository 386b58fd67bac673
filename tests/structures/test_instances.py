import pytest
import torch

from drivemtl.structures import Instances


def test_indexing_concatenation_and_validation():
    inst = Instances(
        boxes=torch.tensor([[0.0, 0, 2, 2], [1, 1, 3, 4], [5, 5, 6, 6]]),
        classes=torch.tensor([0, 2, 1]),
        track_ids=torch.tensor([7, 8, 9]),
        scores=torch.tensor([0.9, 0.2, 0.5]),
    )
    kept = inst[inst.scores > 0.4]
    assert kept.classes.tolist() == [0, 1] and kept.track_ids.tolist() == [7, 9]
    both = Instances.cat([kept, inst[1:2]])
    assert both.track_ids.tolist() == [7, 9, 8] and len(both) == 3
    assert (
        Instances.cat(
            [kept, Instances(boxes=torch.zeros(1, 4), classes=torch.zeros(1, dtype=torch.int64))]
        ).scores
        is None
    )
    with pytest.raises(ValueError, match="classes has 2 rows but boxes has 3"):
        Instances(boxes=torch.zeros(3, 4), classes=torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"must be \[N, 4\]"):
        Instances(boxes=torch.zeros(3, 5), classes=torch.zeros(3, dtype=torch.int64))


def test_empty():
    empty = Instances.empty(image_size=(4, 5), num_joints=18)
    assert len(empty) == 0
    assert empty.masks.shape == (0, 4, 5) and empty.keypoints.shape == (0, 18, 3)
