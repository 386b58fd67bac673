import pytest
import torch

from drivemtl.structures import Instances, Sample, SampleMeta, collate


def make_sample(name, h, w, tasks, **targets):
    meta = SampleMeta(name=name, image_set="s", orig_size=(h, w))
    image = torch.arange(3 * h * w, dtype=torch.float32).reshape(3, h, w)
    return Sample(image=image, meta=meta, tasks=frozenset(tasks), **targets)


def test_collate_pads_images_and_dense_targets_with_ignore_values():
    sem = torch.tensor([[1, 2, 3], [4, 5, 6]])
    depth = torch.full((3, 4), 7.5)
    a = make_sample("a", 2, 3, {"semantic"}, semantic=sem)
    b = make_sample("b", 3, 4, {"depth"}, depth=depth)
    batch = collate([a, b], size_divisor=4)

    assert batch.images.shape == (2, 3, 4, 4)
    assert torch.equal(batch.images[0, :, :2, :3], a.image)
    assert batch.images[0, :, 2:, :].abs().sum() == 0 and batch.images[0, :, :, 3:].abs().sum() == 0
    assert batch.image_sizes == [(2, 3), (3, 4)]

    assert batch.semantic.dtype == torch.uint8  # class maps travel as uint8
    expected_sem = torch.full((2, 4, 4), 255, dtype=torch.uint8)
    expected_sem[0, :2, :3] = sem
    assert torch.equal(batch.semantic, expected_sem)  # sample b has no semantic -> all ignore
    expected_depth = torch.zeros(2, 4, 4)
    expected_depth[1, :3, :4] = 7.5
    assert torch.equal(batch.depth, expected_depth)  # 0 = invalid depth
    assert batch.drivable is None and batch.flow is None

    assert batch.labeled["semantic"].tolist() == [True, False]
    assert batch.labeled["depth"].tolist() == [False, True]
    assert batch.is_labeled("pose").tolist() == [False, False]


def test_collate_tags_instances_and_reference_frames():
    tags = torch.tensor([2, 4, 0])
    inst = Instances(boxes=torch.tensor([[0.0, 0.0, 1.0, 1.0]]), classes=torch.tensor([2]))
    ref_a = make_sample("a0", 2, 2, set())
    ref_b = make_sample("b0", 2, 2, set())
    a = make_sample(
        "a1", 2, 2, {"tagging", "detection"}, tags=tags, instances=inst, references=[ref_a]
    )
    b = make_sample("b1", 2, 2, set(), references=[ref_b])
    batch = collate([a, b], size_divisor=1)
    assert batch.tags.tolist() == [[2, 4, 0], [255, 255, 255]]
    assert batch.instances[0] is inst and batch.instances[1] is None
    assert batch.reference is not None and [m.name for m in batch.reference.metas] == ["a0", "b0"]
    moved = batch.to("cpu")
    assert torch.equal(moved.tags, batch.tags) and moved.reference is not None


def test_collate_rejects_mixed_video_batches_and_bad_shapes():
    a = make_sample("a1", 2, 2, set(), references=[make_sample("a0", 2, 2, set())])
    b = make_sample("b1", 2, 2, set())
    with pytest.raises(ValueError, match=r"without a reference frame: \['b1'\]"):
        collate([a, b])
    bad = make_sample("c", 2, 2, {"semantic"}, semantic=torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"frame c: semantic is \(3, 2\), image is \(2, 2\)"):
        collate([bad])
    with pytest.raises(ValueError, match="at least one sample"):
        collate([])


def test_clips_collate_one_batch_per_reference_position():
    refs = [[make_sample(f"{k}{t}", 2, 2, set()) for t in (1, 2)] for k in "ab"]
    a = make_sample("a0", 2, 2, set(), references=refs[0])
    b = make_sample("b0", 2, 2, set(), references=refs[1])
    batch = collate([a, b], size_divisor=2)
    assert batch.clip_length == 3
    assert [[m.name for m in r.metas] for r in batch.references] == [["a1", "b1"], ["a2", "b2"]]
    assert batch.reference is batch.references[0]
    short = make_sample("c0", 2, 2, set(), references=refs[0][:1])
    with pytest.raises(ValueError, match=r"clips of different lengths in one batch: "):
        collate([a, short])
