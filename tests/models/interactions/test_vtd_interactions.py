"""VTDNet's Intra-IB (window and objects modes) and Cross-IB: float64 references, identity at
init, scheduling inside MultiTaskNet and gradients from a decoder loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from batches import TINY_HEADS, make_batch

from drivemtl.models import build_model
from drivemtl.models.config import ModelConfig, TaskConfig
from drivemtl.models.features import Features, FeatureSpec, ObjectFeatures, task_group_key
from drivemtl.models.interactions import INTERACTIONS
from drivemtl.models.interactions.vtd import (
    CrossIB,
    ObjectIntraIB,
    VTDCrossOptions,
    VTDIntraOptions,
    WindowIntraIB,
)
from drivemtl.models.stage import StageContext

GROUPS = {"semantic": "segmentation", "drivable": "segmentation", "detection": "localization",
          "pose": "localization", "tagging": "classification"}  # fmt: skip
SEG, LOC = ["semantic", "drivable"], ["detection", "pose"]


def context(group_channels: int = 8, pixel_channels: int = 6) -> StageContext:
    spec = FeatureSpec(16, pixel_channels, (4, 8, 16, 32), {"segmentation": group_channels})
    return StageContext(spec, GROUPS, name="interactions.0")


def features(h: int = 37, w: int = 53, objects: list[int] = (3, 0), dtype=torch.float64):
    """Two images: a group map at stride 4 [2, 8, h, w], pixel levels with 6 channels, and
    object vectors [Ri, 6] already in the object stream."""
    g = torch.Generator().manual_seed(0)
    pixel = [torch.randn(2, 6, (4 * h) // s, (4 * w) // s, generator=g, dtype=dtype)
             for s in (4, 8, 16, 32)]  # fmt: skip
    boxes = [torch.tensor([[2.0, 3.0, 20.0, 30.0]], dtype=dtype).repeat(n, 1) for n in objects]
    obj = ObjectFeatures(proposals=boxes, rois=boxes)
    obj.embeddings = [torch.randn(n, 6, generator=g, dtype=dtype) for n in objects]
    return Features(
        image=pixel[-1], pixel=pixel, strides=(4, 8, 16, 32), input_size=(4 * h, 4 * w),
        image_sizes=[(4 * h, 4 * w)] * 2,
        groups={"segmentation": torch.randn(2, 8, h, w, generator=g, dtype=dtype)}, objects=obj,
    )  # fmt: skip


def randomize_outputs(module: torch.nn.Module) -> None:
    """Give the zero-initialised output layers random weights (a trained block)."""
    torch.manual_seed(3)
    for name, p in module.named_parameters():
        if "outputs" in name or "_out" in name:
            torch.nn.init.normal_(p, std=0.5)


def attention(attn, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Explicit softmax(Q K^T / sqrt(d)) V, head by head and query by query."""
    q, k, v = attn.q(queries), attn.k(keys), attn.v(keys)
    d = q.shape[-1] // attn.heads
    out = torch.zeros_like(q)
    for h in range(attn.heads):
        cols = slice(h * d, (h + 1) * d)
        for i in range(len(q)):
            if len(k) == 0:
                continue
            logits = torch.stack([q[i, cols] @ k[j, cols] for j in range(len(k))]) / math.sqrt(d)
            weights = logits.softmax(0)
            out[i, cols] = sum(weights[j] * v[j, cols] for j in range(len(k)))
    return attn.proj(out)


def ffn(block, x: torch.Tensor) -> torch.Tensor:
    return block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(x))))


# ---- Intra-IB, window mode -------------------------------------------------------------------


def window_block(**options) -> WindowIntraIB:
    opts = VTDIntraOptions(type="vtd_intra", groups=["segmentation"], heads=2, **options)
    return INTERACTIONS.get("vtd_intra")(opts, context())


def test_window_intra_is_identity_at_init_on_any_size() -> None:
    block = window_block(channels=4).double()
    assert [b.shift for b in block.blocks] == [0, 3]  # M = 2, the second shifted by ws // 2
    assert block.needs == block.modifies == ("group:segmentation",)
    f = features(37, 53)
    block(f)
    for task in SEG:
        torch.testing.assert_close(f.group_map("segmentation", task), f.groups["segmentation"])
    assert f.group_map("segmentation", "lanes") is f.groups["segmentation"]  # no own map


def test_window_intra_composes_task_tokens_swin_blocks_and_split() -> None:
    block = window_block(channels=4).double()
    randomize_outputs(block)
    f = features(11, 16)
    shared = f.groups["segmentation"]
    block(f)
    x = shared.permute(0, 2, 3, 1)
    tokens = torch.cat([block.task_tokens.inputs[t](x) for t in SEG], dim=-1)  # [.., 2 * C']
    assert tokens.shape[-1] == 8
    tokens = block.blocks[1](block.blocks[0](tokens))
    for k, task in enumerate(SEG):
        expected = x + block.task_tokens.outputs[task](tokens[..., 4 * k : 4 * (k + 1)])
        got = f.groups[task_group_key("segmentation", task)]
        torch.testing.assert_close(got, expected.permute(0, 3, 1, 2), rtol=1e-10, atol=1e-10)
    assert not torch.allclose(f.groups["segmentation/semantic"], shared)


# ---- Intra-IB, objects mode ------------------------------------------------------------------


def object_block() -> ObjectIntraIB:
    opts = VTDIntraOptions(type="vtd_intra", groups=["localization"], heads=2, channels=4)
    return INTERACTIONS.get("vtd_intra")(opts, context())


def test_object_intra_matches_a_per_image_loop() -> None:
    block = object_block().double()
    randomize_outputs(block)
    f = features(objects=[4, 1])
    vectors = [v.clone() for v in f.objects.embeddings]
    block(f)
    for i, v in enumerate(vectors):  # each image on its own: no padding, no mask
        x = torch.cat([block.task_tokens.inputs[t](v) for t in LOC], dim=1)
        for b in block.blocks:
            x = x + attention(b.attn, b.norm1(x), b.norm1(x))
            x = x + ffn(b, x)
        for k, task in enumerate(LOC):
            expected = v + block.task_tokens.outputs[task](x[:, 4 * k : 4 * (k + 1)])
            got = f.objects.vectors(task)[i]
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_object_intra_identity_at_init_and_pools_vectors_when_missing() -> None:
    block = object_block()
    f = features(objects=[2, 0], dtype=torch.float32)
    f.objects.embeddings = None
    f.pixel = [torch.full_like(p, 1.5) for p in f.pixel]  # constant maps: every vector is 1.5
    block(f)
    assert [e.shape for e in f.objects.embeddings] == [(2, 6), (0, 6)]
    torch.testing.assert_close(f.objects.embeddings[0], torch.full((2, 6), 1.5))
    for task in LOC:
        for got, pooled in zip(f.objects.vectors(task), f.objects.embeddings, strict=True):
            torch.testing.assert_close(got, pooled)


# ---- Cross-IB --------------------------------------------------------------------------------


def cross_block() -> CrossIB:
    opts = VTDCrossOptions(type="vtd_cross", channels=8, heads=2)
    return INTERACTIONS.get("vtd_cross")(opts, context())


def avg_pool_by_hand(x: torch.Tensor, k: int) -> torch.Tensor:
    """[C, H, W] -> [C, ceil(H/k), ceil(W/k)], each cell the mean of its (clipped) k x k block."""
    c, h, w = x.shape
    out = x.new_zeros(c, -(-h // k), -(-w // k))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j] = x[:, i * k : (i + 1) * k, j * k : (j + 1) * k].mean(dim=(1, 2))
    return out


def test_cross_identity_at_init() -> None:
    block = cross_block()
    assert block.needs == ("group:segmentation", "pixel", "objects")
    assert block.modifies == ("group:segmentation", "objects")
    f = features(37, 53, dtype=torch.float32)
    block(f)
    for task in SEG:
        torch.testing.assert_close(f.group_map("segmentation", task), f.groups["segmentation"])
    for task in LOC:
        for got, start in zip(f.objects.vectors(task), f.objects.embeddings, strict=True):
            torch.testing.assert_close(got, start)


def test_cross_matches_a_per_image_loop_in_both_directions() -> None:
    block = cross_block().double()
    randomize_outputs(block)
    f = features(37, 53, objects=[3, 2])
    f.image_sizes[1] = (78, 112)  # image 1 is padded: pooled cells of 32 px start inside 3 x 4
    f.groups["segmentation/drivable"] = f.groups["segmentation"] * 2.0  # an Intra-IB's output
    maps = torch.cat([f.groups["segmentation"], f.groups["segmentation/drivable"]], dim=1)
    vectors = [torch.cat([v, v], dim=1) for v in f.objects.embeddings]  # detection, pose
    block(f)
    for i in range(2):
        small = avg_pool_by_hand(maps[i], 8)  # [16, 5, 7]
        pix = block.pixel_in(small.flatten(1).T)
        obj = block.object_in(vectors[i])
        a, b = block.objects_from_pixels, block.pixels_from_objects
        inside = pix if i == 0 else pix.view(5, 7, -1)[:3, :4].reshape(12, -1)
        mid = obj + attention(a.attn, a.norm_q(obj), a.norm_kv(inside))
        new_obj = mid - obj + ffn(a, mid)
        mid = pix + attention(b.attn, b.norm_q(pix), b.norm_kv(obj))
        new_pix = mid - pix + ffn(b, mid)
        grid = block.pixel_out(new_pix).T.reshape(1, 16, *small.shape[1:])
        up = F.interpolate(grid, size=(37, 53), mode="bilinear", align_corners=False)[0]
        expected_maps = maps[i] + up
        for k, task in enumerate(SEG):
            got = f.group_map("segmentation", task)[i]
            torch.testing.assert_close(
                got, expected_maps[8 * k : 8 * (k + 1)], rtol=1e-9, atol=1e-9
            )
        expected_obj = vectors[i] + block.object_out(new_obj)
        for k, task in enumerate(LOC):
            got = f.objects.vectors(task)[i]
            torch.testing.assert_close(
                got, expected_obj[:, 6 * k : 6 * (k + 1)], rtol=1e-9, atol=1e-9
            )


# ---- configuration errors --------------------------------------------------------------------


def test_block_errors_name_the_problem() -> None:
    ctx = context()
    with pytest.raises(ValueError, match="classification"):
        INTERACTIONS.get("vtd_intra")(
            VTDIntraOptions(type="vtd_intra", groups=["classification"]), ctx
        )
    with pytest.raises(ValueError, match="no enabled task is in group 'geometry'"):
        INTERACTIONS.get("vtd_intra")(
            VTDIntraOptions(type="vtd_intra", groups=["geometry"], mode="window"), ctx
        )
    no_encoder = StageContext(FeatureSpec(16, 6, (4, 8, 16, 32)), GROUPS)
    with pytest.raises(ValueError, match="no group encoder"):
        INTERACTIONS.get("vtd_intra")(
            VTDIntraOptions(type="vtd_intra", groups=["segmentation"]), no_encoder
        )
    with pytest.raises(ValueError, match="token width 6 is not divisible by heads=4"):
        INTERACTIONS.get("vtd_intra")(
            VTDIntraOptions(type="vtd_intra", groups=["segmentation"], channels=3, heads=4), ctx
        )


# ---- inside MultiTaskNet ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    tasks = ("semantic", "drivable")
    cfg = ModelConfig(
        backbone={"type": "resnet18", "width": 8, "norm": "gn"},
        neck={"type": "fpn", "out_channels": 16, "norm": "gn"},
        groups={"segmentation": {"type": "semantic_fpn", "channels": 16}},
        interactions=[{"type": "vtd_intra", "groups": ["segmentation"], "heads": 2}],
        tasks={t: TaskConfig(head=dict(TINY_HEADS[t])) for t in tasks},
    )
    return build_model(cfg)


def test_intra_runs_after_the_group_encoder_and_before_the_decoders(model) -> None:
    order = [s.path for s in model.schedule(["semantic", "drivable"])]
    assert order.index("groups.segmentation") < order.index("interactions.0")
    assert order.index("interactions.0") < min(order.index("heads.semantic"),
                                               order.index("heads.drivable"))  # fmt: skip


def test_decoders_read_their_own_map_and_gradients_reach_the_block(model) -> None:
    block = model.interactions[0]
    batch = make_batch(1, ("semantic", "drivable"))
    model.eval()
    with torch.no_grad():
        before = model(batch, ["semantic"])["semantic"]["logits"]
        torch.nn.init.normal_(block.task_tokens.outputs["semantic"].weight, std=0.1)
        outputs = model(batch, ["semantic"])
    after = outputs["semantic"]["logits"]
    feats = outputs.features
    assert not torch.allclose(before, after)  # the semantic decoder reads the IB's output
    assert not torch.allclose(feats.groups["segmentation/semantic"], feats.groups["segmentation"])
    torch.testing.assert_close(feats.groups["segmentation/drivable"], feats.groups["segmentation"])
    model.train()
    model.zero_grad(set_to_none=True)
    model.losses(batch, ["semantic"])["semantic"].backward()
    for name, p in block.named_parameters():
        if "drivable" not in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_all_blocks_with_a_detector_train_and_predict() -> None:
    """Intra-IB (segmentation, localization) then Cross-IB in a semantic + detection model: the
    object-side blocks run after the detector provides the object stream and before the
    segmentation decoders; object vectors follow the RoIs in training, the proposals at
    inference; a semantic loss reaches the localization Intra-IB through the Cross-IB."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone={"type": "resnet18", "width": 8, "norm": "gn"},
        neck={"type": "fpn", "out_channels": 16, "norm": "gn"},
        groups={"segmentation": {"type": "semantic_fpn", "channels": 16}},
        interactions=[
            {"type": "vtd_intra", "groups": ["segmentation"]},
            {"type": "vtd_intra", "groups": ["localization"], "channels": 8},
            {"type": "vtd_cross", "channels": 16, "heads": 2},
        ],
        tasks={t: TaskConfig(head=dict(TINY_HEADS[t])) for t in ("semantic", "detection")},
    )
    model = build_model(cfg)
    order = [s.path for s in model.schedule(["semantic", "detection"])]
    assert order.index("groups.segmentation") < order.index("interactions.0")
    assert order.index("heads.detection") < order.index("interactions.1")  # the decoder
    assert order.index("interactions.1") < order.index("interactions.2")
    assert order.index("interactions.2") < order.index("heads.semantic")
    for block in model.interactions:
        randomize_outputs(block)
    batch = make_batch(1, ("semantic", "detection"))
    model.train()
    losses, outputs = model.losses_and_outputs(batch)
    objects = outputs.features.objects
    assert [len(v) for v in objects.vectors("detection")] == [len(r) for r in objects.rois]
    losses["semantic"].backward()
    intra_loc = model.interactions[1]
    assert intra_loc.task_tokens.inputs["detection"].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        objects = model(batch, ["semantic", "detection"]).features.objects
    # at inference the vectors follow the box head's input boxes, the proposals
    assert [len(v) for v in objects.vectors("detection")] == [len(p) for p in objects.proposals]
    assert [len(s) for s in objects.det_sources] == [len(d) for d in objects.detections]
