import numpy as np
import torch

from drivemtl.inference.visualize import colorize_depth, draw_overlay, draw_panels
from drivemtl.structures import FramePrediction, Instances, SampleMeta
from drivemtl.structures.palette import DRIVABLE_PALETTE, SEMANTIC_PALETTE, instance_colour


def prediction(h=40, w=60, **fields):
    return FramePrediction(meta=SampleMeta(name="f", image_set="s", orig_size=(h, w)), **fields)


def test_drivable_tint_is_an_exact_alpha_blend_and_background_stays():
    image = np.full((40, 60, 3), 100, dtype=np.uint8)
    drivable = torch.full((40, 60), 2)
    drivable[30:, :20] = 0
    drivable[30:, 40:] = 1
    out = draw_overlay(image, prediction(drivable=drivable))
    expect_direct = np.clip(
        0.55 * 100 + 0.45 * DRIVABLE_PALETTE[0].astype(np.float32), 0, 255
    ).astype(np.uint8)
    assert np.array_equal(out[35, 5], expect_direct)
    expect_alt = (0.55 * 100 + 0.45 * DRIVABLE_PALETTE[1].astype(np.float32)).astype(np.uint8)
    assert np.array_equal(out[35, 50], expect_alt)
    assert np.array_equal(out[5, 30], [100, 100, 100])
    assert np.array_equal(image[35, 5], [100, 100, 100])  # input untouched


def test_semantic_boxes_masks_and_tags_are_drawn():
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    semantic = torch.full((40, 60), 10)  # sky everywhere
    mask = torch.zeros(1, 40, 60, dtype=torch.bool)
    mask[0, 20:30, 20:30] = True
    inst = Instances(
        boxes=torch.tensor([[20.0, 20.0, 29.0, 29.0]]),
        classes=torch.tensor([2]),
        scores=torch.tensor([0.9]),
        masks=mask,
        track_ids=torch.tensor([5]),
    )
    out = draw_overlay(image, prediction(semantic=semantic, instances=inst))
    sky = (0.45 * SEMANTIC_PALETTE[10].astype(np.float32)).astype(np.uint8)
    assert np.array_equal(out[39, 0], sky)
    inside = out[25, 25].astype(int)
    tint = np.array(instance_colour(5))
    expected = (0.55 * sky.astype(np.float32) + 0.45 * tint).astype(int)
    assert np.abs(inside - expected).max() <= 1
    assert not np.array_equal(out[29, 29], sky)  # box outline / contour pixels coloured


def test_panels_per_task():
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    depth = torch.full((10, 10), 4.0)
    depth[0, 0] = 0.0
    panels = draw_panels(
        image,
        prediction(
            10,
            10,
            depth=depth,
            normals=torch.tensor([0.0, 0.0, -1.0]).view(3, 1, 1).expand(3, 10, 10),
            edges=torch.ones(10, 10) * 0.5,
            tags=torch.tensor([2, 4, 0]),
        ),
    )
    assert set(panels) == {"depth", "normals", "edges", "tagging"}
    assert np.array_equal(panels["depth"][0, 0], [0, 0, 0])
    assert np.array_equal(panels["normals"][5, 5], [127, 127, 0])
    assert panels["edges"][3, 3, 0] == 127
    assert panels["tagging"].sum() > 0


def test_colorize_depth_is_monotone():
    depth = np.array([[1.0, 2.0, 4.0, 0.0]], dtype=np.float32)
    coloured = colorize_depth(depth).astype(int).sum(axis=-1)[0]
    assert coloured[0] > coloured[1] > coloured[2] and coloured[3] == 0


def test_overlays_leave_out_detections_below_the_display_score() -> None:
    image = np.full((40, 60, 3), 100, dtype=np.uint8)
    inst = Instances(
        boxes=torch.tensor([[5.0, 5.0, 30.0, 30.0]]),
        classes=torch.tensor([2]),
        scores=torch.tensor([0.4]),
    )
    shown = draw_overlay(image, prediction(detections=inst), score_threshold=0.3)
    hidden = draw_overlay(image, prediction(detections=inst))  # default display score 0.5
    assert np.array_equal(hidden, image)
    assert not np.array_equal(shown, image) and not np.array_equal(shown[30, 5:30], image[30, 5:30])
