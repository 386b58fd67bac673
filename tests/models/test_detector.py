"""Detection head helpers: ground truth of the batch as the detector sees it."""

import torch

from drivemtl.models.heads.detector import ground_truth
from drivemtl.structures import Instances, Sample, SampleMeta, collate


def _sample(name, instances):
    meta = SampleMeta(name=name, image_set="s", orig_size=(8, 8))
    return Sample(
        image=torch.zeros(3, 8, 8), meta=meta, tasks=frozenset({"detection"}), instances=instances
    )


def test_classes_the_detector_does_not_predict_become_ignore_regions():
    inst = Instances(
        boxes=torch.tensor([[0.0, 0, 2, 2], [1, 1, 4, 4], [2, 2, 6, 6]]),
        classes=torch.tensor([2, 9, 0]),
        ignore=torch.tensor([False, False, True]),
    )
    plain = Instances(boxes=torch.tensor([[0.0, 0, 3, 3]]), classes=torch.tensor([8]))
    batch = collate([_sample("a", inst), _sample("b", plain), _sample("c", None)], size_divisor=1)
    boxes, classes, ignore = ground_truth(batch, torch.device("cpu"), num_classes=8)
    assert torch.equal(boxes[0], inst.boxes)  # indices stay aligned with batch.instances
    assert classes[0].tolist() == [2, 7, 0] and ignore[0].tolist() == [False, True, True]
    assert ignore[1].tolist() == [True]
    assert boxes[2] is None and classes[2] is None and ignore[2] is None
    # a 10-class detector keeps everything as it is
    _, classes10, ignore10 = ground_truth(batch, torch.device("cpu"), num_classes=10)
    assert classes10[0].tolist() == [2, 9, 0] and ignore10[0].tolist() == [False, False, True]
    assert ignore10[1] is None
