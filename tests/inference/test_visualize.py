import numpy as np
import torch

from drivemtl.inference.visualize import (
    colorize_depth,
    display_scale,
    draw_overlay,
    draw_panels,
    flow_to_color,
    legend_entries,
    with_legend,
)
from drivemtl.structures import FramePrediction, Instances, SampleMeta
from drivemtl.structures.palette import (
    DRIVABLE_PALETTE,
    LANE_PALETTE,
    SEMANTIC_PALETTE,
    THING_PALETTE,
    instance_colour,
)


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


def test_display_scale_is_a_whole_factor_towards_the_display_width() -> None:
    assert [display_scale(w) for w in (320, 640, 1280, 1920, 100)] == [3, 2, 1, 1, 10]
    assert display_scale(320, target=320) == 1


def test_upscaled_overlay_keeps_class_maps_pixel_exact_and_draws_boxes_at_scale() -> None:
    image = np.full((40, 60, 3), 100, dtype=np.uint8)
    drivable = torch.full((40, 60), 2)
    drivable[30:, :20] = 0
    boxes = Instances(
        boxes=torch.tensor([[10.0, 5.0, 30.0, 20.0]]),
        classes=torch.tensor([2]),
        scores=torch.tensor([0.9]),
    )
    native = draw_overlay(image, prediction(drivable=drivable))
    big = draw_overlay(image, prediction(drivable=drivable, detections=boxes), scale=3)
    assert big.shape == (120, 180, 3)
    assert np.array_equal(big[3 * 35 + 1, 3 * 5 + 2], native[35, 5])  # blended block, unchanged
    car = THING_PALETTE[2]
    assert np.array_equal(big[45, 3 * 30], car)  # the right edge of the box at x = 90
    assert np.array_equal(big[45, 3 * 30 + 4], [100, 100, 100])  # just outside it: untouched


def test_legend_lists_what_the_overlay_shows_with_its_colours() -> None:
    semantic = torch.full((40, 60), 10)  # sky
    semantic[20:, :] = 0  # road below: the larger area comes first
    semantic[0, 0] = 13  # a single car pixel: a speck, not listed
    lanes = torch.zeros(3, 40, 60, dtype=torch.long)
    lanes[0, 10, :] = 5  # category 5 = "road curb", one thin row
    boxes = Instances(
        boxes=torch.tensor([[1.0, 1.0, 5.0, 5.0], [2.0, 2.0, 9.0, 9.0]]),
        classes=torch.tensor([2, 0]),
        scores=torch.tensor([0.9, 0.2]),
    )
    entries = legend_entries(prediction(semantic=semantic, lanes=lanes, detections=boxes))
    names = [n for n, _ in entries]
    assert names == ["road", "sky", "lane: road curb", "box: car"]
    assert entries[0][1] == tuple(int(c) for c in SEMANTIC_PALETTE[0])
    assert entries[2][1] == tuple(int(c) for c in LANE_PALETTE[5])
    canvas = np.zeros((120, 180, 3), dtype=np.uint8)
    shown = with_legend(canvas, entries)
    assert shown.shape[1] == 180 and shown.shape[0] > 120
    assert np.array_equal(shown[:120], canvas)
    strip = shown[120:].reshape(-1, 3)
    for _, colour in entries:
        assert (strip == np.array(colour, dtype=np.uint8)).all(axis=1).any()
    assert with_legend(canvas, []) is canvas


def test_panels_are_drawn_at_the_display_scale() -> None:
    image = np.zeros((10, 12, 3), dtype=np.uint8)
    depth = torch.full((10, 12), 4.0)
    boxes = Instances(
        boxes=torch.tensor([[1.0, 1.0, 6.0, 6.0]]), classes=torch.tensor([1]),
        scores=torch.tensor([0.9]),
    )  # fmt: skip
    panels = draw_panels(image, prediction(10, 12, depth=depth, detections=boxes), scale=2)
    assert {k: v.shape for k, v in panels.items()} == {
        "depth": (20, 24, 3), "detection": (20, 24, 3),
    }  # fmt: skip
    native = draw_panels(image, prediction(10, 12, depth=depth))
    assert np.array_equal(panels["depth"][::2, ::2], native["depth"])


def uniform(u, v, h=3, w=4):
    return np.stack([np.full((h, w), u, dtype=np.float32), np.full((h, w), v, dtype=np.float32)])


def test_zero_flow_is_white():
    out = flow_to_color(np.zeros((2, 5, 6), dtype=np.float32))
    assert out.dtype == np.uint8 and out.shape == (5, 6, 3)
    assert (out == 255).all()


def test_full_vectors_take_the_wheel_colour_of_their_direction():
    # angle 0 (+x) is the wheel's first entry, pure red (Baker et al.: RY segment starts at red)
    assert (flow_to_color(uniform(3.0, 0.0)) == [255, 0, 0]).all()
    # -x is half-way round: entry 27 of 55 = the cyan-blue segment's third step,
    # (0, 255 - floor(255 * 2 / 11), 255) = (0, 209, 255)
    assert (flow_to_color(uniform(-0.2, 0.0)) == [0, 209, 255]).all()


def test_saturation_grows_with_magnitude_and_scale_does_not_matter():
    flow = np.zeros((2, 1, 4), dtype=np.float32)
    flow[0, 0] = [0.0, 1.0, 2.0, 4.0]  # same direction (+x), growing magnitude
    out = flow_to_color(flow).astype(int)
    distance = np.abs(255 - out[0]).sum(axis=-1)  # away from white
    assert list(distance) == sorted(distance) and len(set(distance)) == 4
    # relative magnitude r: red stays 255, green and blue are floor(255 * (1 - r))
    expected = np.floor(255 * (1 - np.array([0.0, 0.25, 0.5, 1.0]) / (1 + 1e-5 / 4)))
    assert np.array_equal(out[0, :, 1], expected) and (out[0, :, 0] == 255).all()
    assert np.array_equal(flow_to_color(flow * 10), flow_to_color(flow))
