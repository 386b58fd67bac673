"""The `pwc_flow` criterion on hand-made frame pairs: the true integer shift costs less than zero
flow (with each occlusion estimate), the de-normalisation, the padding and unlabelled samples."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from drivemtl.models.config import TaskConfig
from drivemtl.models.heads.pwc_flow import FlowOutputs
from drivemtl.structures.batch import Batch
from drivemtl.structures.sample import SampleMeta
from drivemtl.tasks import TASKS

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
H, W, SHIFT = 32, 48, 4  # the key frame is the reference moved left by SHIFT pixels


def _texture(seed: int = 0) -> torch.Tensor:
    """[1, 3, H, W + SHIFT] smooth random RGB in 0..255."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, H // 4, (W + SHIFT) // 4, generator=g)
    return 255 * F.interpolate(coarse, size=(H, W + SHIFT), mode="bilinear", align_corners=False)


def _batch(key: torch.Tensor, ref: torch.Tensor, same_frame: bool = False) -> Batch:
    def one(images, name):
        b = len(images)
        metas = [SampleMeta(name=f"{name}{i}", image_set="t", orig_size=(H, W)) for i in range(b)]
        return Batch(images=(images - MEAN) / STD, image_sizes=[(H, W)] * b, metas=metas,
                     labeled={}, instances=[None] * b, lane_lines=[None] * b)  # fmt: skip

    batch = one(key, "k")
    batch.references = [one(ref, "k" if same_frame else "r")]
    return batch


def _outputs(dx: float, batch: int = 1) -> FlowOutputs:
    """Constant stride-4 flows: forward dx (in stride-4 pixels), backward -dx."""
    flow = torch.zeros(batch, 2, H // 4, W // 4)
    flow[:, 0] = dx / 4
    return FlowOutputs([flow], [-flow], (4,), (H, W))


@pytest.mark.parametrize("occlusion", ["range_map", "fb_consistency", "none"])
def test_the_true_shift_costs_less_than_zero_flow(occlusion: str) -> None:
    task = TASKS.get("flow")(TaskConfig(head={"occlusion": occlusion}))
    texture = _texture()
    key, ref = texture[..., SHIFT:], texture[..., :W]  # key(x) = ref(x + SHIFT)
    batch = _batch(key, ref)
    true = task.loss(_outputs(SHIFT), batch)
    zero = task.loss(_outputs(0.0), batch)
    wrong = task.loss(_outputs(-SHIFT), batch)
    assert float(true) < 0.5 * float(zero) and float(true) < 0.5 * float(wrong)
    # Identical frames: zero flow is the best, and its census term vanishes up to the penalty's
    # floor 0.01 ** 0.4 (smoothness of a constant flow is zero).
    still = _batch(key, key)
    assert float(task.loss(_outputs(0.0), still)) == pytest.approx(0.01**0.4, rel=1e-4)


def test_images_are_brought_back_to_unit_range() -> None:
    family = TASKS.get("flow")().family
    texture = _texture()
    torch.testing.assert_close(family.unit_images((texture - MEAN) / STD), texture / 255)
    raw = TASKS.get("flow")(TaskConfig(head={"normalized": False})).family
    torch.testing.assert_close(raw.unit_images(texture), texture / 255)


def test_padding_and_unlabelled_samples_do_not_count() -> None:
    task = TASKS.get("flow")()
    texture = _texture()
    key, ref = texture[..., SHIFT:], texture[..., :W]
    alone = task.loss(_outputs(SHIFT), _batch(key, ref))
    # A second sample whose reference is a copy of itself is not labelled: same loss.
    pair = _batch(torch.cat((key, _texture(1)[..., :W])), torch.cat((ref, _texture(1)[..., :W])))
    pair.references[0].metas[1] = pair.metas[1]
    assert task.labeled(pair).tolist() == [True, False]
    torch.testing.assert_close(task.loss(_outputs(SHIFT, 2), pair), alone)
    # Garbage in the padding (8 columns) changes nothing in the census term (the smoothness
    # term, here only its floor, averages over the padded map).
    task = TASKS.get("flow")(TaskConfig(head={"smooth_weight": 0.0}))
    alone = task.loss(_outputs(SHIFT), _batch(key, ref))
    padded = _batch(F.pad(key, (0, 8), value=255.0), F.pad(ref, (0, 8), value=0.0))
    padded.image_sizes = padded.references[0].image_sizes = [(H, W)]
    grown = torch.zeros(1, 2, H // 4, (W + 8) // 4)
    grown[:, 0] = SHIFT / 4
    out = FlowOutputs([grown], [-grown], (4,), (H, W + 8))
    assert float(task.loss(out, padded)) == pytest.approx(float(alone), rel=1e-5)
    # No labelled sample: an exact zero without gradient.
    still = _batch(key, key, same_frame=True)
    loss = task.loss(_outputs(SHIFT), still)
    assert loss.item() == 0.0 and not loss.requires_grad


def _two_levels(dx: float) -> FlowOutputs:
    """Constant flows at strides 8 and 4 (dx input pixels), backward -dx."""
    coarse, fine = torch.zeros(1, 2, H // 8, W // 8), torch.zeros(1, 2, H // 4, W // 4)
    coarse[:, 0], fine[:, 0] = dx / 8, dx / 4
    return FlowOutputs([coarse, fine], [-coarse, -fine], (8, 4), (H, W))


def test_level_weights_add_the_criterion_at_coarser_levels() -> None:
    texture = _texture()
    batch = _batch(texture[..., SHIFT:], texture[..., :W])
    finest = TASKS.get("flow")(TaskConfig(head={"strides": [8, 4]}))
    default = finest.loss(_two_levels(SHIFT), batch)
    both = TASKS.get("flow")(TaskConfig(head={"strides": [8, 4], "level_weights": [0.0, 1.0]}))
    assert float(both.loss(_two_levels(SHIFT), batch)) == float(default)
    # The stride-8 term alone (3x3 census, so the 4 x 6 cells keep a 2 x 4 interior): the
    # criterion of the frames area-averaged 8x with the stride-8 flow, smoothness at that
    # resolution; the true shift (half a cell) costs less there than zero flow.
    head = {"strides": [8, 4], "level_weights": [2.0, 0.0], "census_radius": 1}
    coarse = TASKS.get("flow")(TaskConfig(head=head))
    family = coarse.family
    key, ref = (family.unit_images(im) for im in (batch.images, batch.reference.images))
    small = [F.avg_pool2d(im, 8) for im in (key, ref)]
    ones = torch.ones(1, 1, H // 8, W // 8)
    out = _two_levels(SHIFT)
    expected = family.direction_loss(*small, ones, ones, out.forward[0], out.backward[0], 1)
    expected = (expected + family.direction_loss(small[1], small[0], ones, ones, out.backward[0],
                                                 out.forward[0], 1)) / 2  # fmt: skip
    assert float(expected) > 0.5
    torch.testing.assert_close(coarse.loss(out, batch), 2 * expected)
    assert float(coarse.loss(out, batch)) < 0.8 * float(coarse.loss(_two_levels(0.0), batch))
    with pytest.raises(ValueError, match="one weight >= 0 per stride"):
        TASKS.get("flow")(TaskConfig(head={"strides": [8, 4], "level_weights": [1.0]}))
