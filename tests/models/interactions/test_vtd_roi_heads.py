"""The localization group's interaction blocks feeding the RoI heads (issue 18).

The two-stage detector runs as two stages (RPN + RoI sampling, then the box head), the blocks
run between them, and every RoI head of a task in the block adds its task's object vector to its
pooled RoI features through a zero-initialised layer: stage order, identity at init, gradients
from the box / mask / keypoint losses, and the detections' source-proposal bookkeeping. A model
without blocks computes what the unsplit detector computed (checked against the old forward
written out here).
"""

from __future__ import annotations

import pytest
import torch
from batches import TINY_HEADS, make_batch

from drivemtl.models import build_model
from drivemtl.models.config import ModelConfig, TaskConfig
from drivemtl.models.features import Features, FeatureSpec, ObjectFeatures
from drivemtl.models.heads.detector import DetectionOutputs, ground_truth
from drivemtl.models.heads.mask_head import MaskHead
from drivemtl.models.heads.roi_heads import (
    BOX_WEIGHTS,
    RoIConfig,
    detect,
    detect_with_sources,
    sample_rois,
)
from drivemtl.ops.boxes import clip_boxes, decode_boxes

LOC = ("detection", "instance", "pose")
INTRA = {"type": "vtd_intra", "groups": ["localization"], "channels": 8, "heads": 2}


def config(interactions: list[dict], tasks: tuple[str, ...] = LOC) -> ModelConfig:
    """ResNet-18 (width 8) + 16-channel FPN with the localization tasks' tiny heads."""
    return ModelConfig(
        backbone={"type": "resnet18", "width": 8, "norm": "gn"},
        neck={"type": "fpn", "out_channels": 16, "norm": "gn"},
        interactions=interactions,
        tasks={t: TaskConfig(head=dict(TINY_HEADS[t])) for t in tasks},
    )


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: faster without thread hand-offs
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pair():
    """(model without blocks, model with the localization Intra-IB), the shared weights equal."""
    torch.manual_seed(0)
    plain = build_model(config([]))
    torch.manual_seed(0)
    blocks = build_model(config([INTRA]))
    missing, unexpected = blocks.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected
    assert all(k.startswith("interactions.") or ".vector_input." in k for k in missing)
    return plain, blocks


def randomize(module: torch.nn.Module, seed: int = 3) -> None:
    """Random weights for a block's zero-initialised output layers and the heads' vector inputs."""
    torch.manual_seed(seed)
    for name, p in module.named_parameters():
        if "outputs" in name or "_out" in name or "vector_input" in name:
            torch.nn.init.normal_(p, std=0.3)


def test_blocks_run_between_the_proposals_and_the_box_head(pair) -> None:
    plain, blocks = pair
    order = [(s.path, s.kind) for s in blocks.schedule(list(LOC))]
    decoder = order.index(("heads.detection", "decoder"))
    predictor = order.index(("heads.detection", "predictor"))
    block = order.index(("interactions.0", "interaction"))
    assert decoder < block < predictor
    for head in ("heads.instance", "heads.pose"):
        assert predictor < order.index((head, "decoder"))  # they read the detections
    stages = {(s.path, s.kind): s for s in blocks.stage_list}
    assert stages[("heads.detection", "decoder")].provides == ("objects", "task:detection")
    assert stages[("heads.detection", "predictor")].modifies == ("objects",)
    # without blocks the predictor follows its decoder directly, as the whole head ran
    order = [(s.path, s.kind) for s in plain.schedule(list(LOC))]
    assert order.index(("heads.detection", "predictor")) == 1 + order.index(
        ("heads.detection", "decoder")
    )
    assert blocks.stage_prefixes()["predictor"] == ["heads.detection.box_head."]


def test_only_the_blocks_tasks_read_vectors(pair) -> None:
    plain, blocks = pair
    for name in LOC:
        assert getattr(plain.heads[name], "vector_input", None) is None
    assert blocks.heads["detection"].box_head.vector_input.proj.in_features == 16
    assert blocks.heads["instance"].vector_input is not None
    assert blocks.heads["pose"].vector_input is not None
    torch.manual_seed(0)
    instance_only = build_model(config([INTRA], ("detection", "instance")))
    assert instance_only.interactions[0].object_vectors == {"detection": 16, "instance": 16}


def _eval_outputs(model, batch):
    model.eval()
    with torch.no_grad():
        return model(batch, targets=False)


def test_identity_at_init(pair) -> None:
    """Zero-initialised block outputs and vector inputs: the same detections, masks, heatmaps
    and training losses as the same weights without blocks."""
    plain, blocks = pair
    batch = make_batch(2, LOC)
    a, b = _eval_outputs(plain, batch), _eval_outputs(blocks, batch)
    assert sum(len(x) for x in a["detection"].boxes) > 0 and len(a["instance"].logits) > 0
    for field in ("boxes", "scores", "classes"):
        for x, y in zip(
            getattr(a["detection"], field), getattr(b["detection"], field), strict=True
        ):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    for name in ("instance", "pose"):
        torch.testing.assert_close(a[name].logits, b[name].logits, rtol=0, atol=0)
    losses = []
    for model in (plain, blocks):
        model.train()
        torch.manual_seed(5)
        losses.append(model.losses(batch))
    for name in LOC:
        torch.testing.assert_close(losses[0][name], losses[1][name], rtol=0, atol=0)


def test_box_mask_and_pose_losses_reach_the_localization_intra_block() -> None:
    torch.manual_seed(0)
    model = build_model(config([INTRA]))
    randomize(model)
    block = model.interactions[0]
    batch = make_batch(2, LOC)
    model.train()
    for task in LOC:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        model.losses(batch, [task])[task].backward()
        grad = block.task_tokens.inputs[task].weight.grad
        assert grad is not None and grad.abs().sum() > 0, task
        assert block.task_tokens.outputs[task].weight.grad.abs().sum() > 0, task
        attention = block.blocks[0].attn.q.weight.grad
        assert attention is not None and attention.abs().sum() > 0, task


def test_detections_keep_their_source_proposal() -> None:
    """By hand: two proposals, two classes; the kept detections name the proposal they were
    decoded from, through the score threshold and NMS."""
    proposals = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]])]
    # proposal 0: class 1 (p ~ 0.98); proposal 1: class 0 (p ~ 0.98); background low
    logits = torch.tensor([[0.0, 5.0, -5.0], [5.0, 0.0, -5.0]])
    deltas = torch.zeros(2, 8)
    config = RoIConfig(score_threshold=0.5)
    boxes, _, classes, sources = detect_with_sources(
        logits, deltas, proposals, [(64, 64)], 2, config
    )
    assert classes[0].tolist() == [1, 0] and sources[0].tolist() == [0, 1]
    torch.testing.assert_close(boxes[0], proposals[0])
    assert [x.tolist() for x in detect(logits, deltas, proposals, [(64, 64)], 2, config)[0]] == [
        boxes[0].tolist()
    ]


def test_a_detection_reads_its_source_proposals_vector(pair) -> None:
    """Inside the model: each detection decodes from its `det_sources` proposal, and the mask
    head adds that proposal's vector (checked by hand against the head's layers)."""
    _, blocks = pair
    model = build_model(config([INTRA]))
    model.load_state_dict(blocks.state_dict())
    randomize(model)
    batch = make_batch(2, LOC)
    out = _eval_outputs(model, batch)
    objects, det = out.features.objects, out["detection"]
    head = model.heads["instance"]
    start = 0
    for i, (boxes, classes, sources) in enumerate(
        zip(objects.detections, objects.det_classes, objects.det_sources, strict=True)
    ):
        assert len(sources) == len(boxes) > 0
        n = len(objects.proposals[i])
        rows = det.box_deltas[start : start + n].view(n, -1, 4)  # class-specific deltas
        start += n
        decoded = decode_boxes(rows[sources, classes], objects.proposals[i][sources], BOX_WEIGHTS)
        torch.testing.assert_close(clip_boxes(decoded, batch.image_sizes[i]), boxes)
    vectors = objects.task_embeddings["instance"]
    keep = [head.keep_class(c) for c in objects.det_classes]
    rows = torch.cat([v[s[k]] for v, s, k in zip(vectors, objects.det_sources, keep, strict=True)])
    boxes = [d[k] for d, k in zip(objects.detections, keep, strict=True)]
    pooled = head.pooler(out.features.levels(head.strides), head.strides, boxes)
    expected = head.logits(pooled + head.vector_input.proj(rows)[:, :, None, None])
    torch.testing.assert_close(out["instance"].logits, expected, rtol=1e-5, atol=1e-6)


def test_mask_head_indexes_vectors_by_hand() -> None:
    """Training: the positive RoIs' own rows; inference: the detections' source rows."""
    spec = FeatureSpec(8, 4, (4, 8, 16, 32), object_vectors={"instance": 3})
    head = MaskHead(spec, 2, channels=4, num_convs=1, resolution=4, task="instance")
    torch.nn.init.normal_(head.vector_input.proj.weight)
    g = torch.Generator().manual_seed(0)
    pixel = [torch.randn(1, 4, 64 // s, 64 // s, generator=g) for s in (4, 8, 16, 32)]
    f = Features(pixel[-1], pixel, (4, 8, 16, 32), (64, 64), [(64, 64)])
    rois = torch.tensor([[0.0, 0, 20, 20], [10, 10, 50, 50], [5, 5, 30, 40]])
    vectors = torch.arange(9.0).view(3, 3)
    f.objects = ObjectFeatures(
        proposals=[rois], rois=[rois], roi_labels=[torch.tensor([2, 1, 0])],
        roi_gt_index=[torch.tensor([-1, 0, 1])], task_embeddings={"instance": [vectors]},
    )  # fmt: skip
    batch = make_batch(1, ("instance",))
    out = head(f, batch)  # positives: RoIs 1 and 2
    pooled = head.pooler(pixel, head.strides, [rois[1:]])
    expected = head.logits(pooled + head.vector_input.proj(vectors[1:])[:, :, None, None])
    torch.testing.assert_close(out.logits, expected)
    f.objects = ObjectFeatures(
        proposals=[rois], detections=[rois[[2, 0]]], det_classes=[torch.tensor([1, 0])],
        det_scores=[torch.ones(2)], det_sources=[torch.tensor([2, 0])],
        task_embeddings={"instance": [vectors]},
    )  # fmt: skip
    out = head(f, None)
    pooled = head.pooler(pixel, head.strides, [rois[[2, 0]]])
    expected = head.logits(pooled + head.vector_input.proj(vectors[[2, 0]])[:, :, None, None])
    torch.testing.assert_close(out.logits, expected)


def _unsplit_detector(detector, features, batch) -> DetectionOutputs:
    """The detector's forward before the split (RPN, sampling, box head in one call)."""
    rpn_out = detector.rpn(
        features.levels(detector.rpn_strides), features.image_sizes, training=batch is not None
    )
    maps = features.levels(detector.roi_config.pooler_strides)
    if batch is None:
        logits, deltas = detector.box_head(maps, rpn_out.proposals)
        return detector.detections(rpn_out, logits, deltas, features.image_sizes)[0]
    boxes, classes, ignore = ground_truth(batch, features.image.device, detector.num_classes)
    sampled = sample_rois(
        rpn_out.proposals, boxes, classes, ignore, detector.num_classes, detector.roi_config
    )
    logits, deltas = detector.box_head(maps, sampled.boxes)
    return DetectionOutputs(rpn_out, logits, deltas, sampled=sampled)


@pytest.mark.parametrize("targets", [True, False])
def test_model_without_blocks_matches_the_unsplit_detector(pair, targets) -> None:
    plain, _ = pair
    plain.train(targets)
    batch = make_batch(2, LOC)
    with torch.no_grad():
        torch.manual_seed(7)
        got = plain(batch, ["detection"], targets=targets)["detection"]
        torch.manual_seed(7)
        features = plain.extract(batch.images, batch.image_sizes)
        want = _unsplit_detector(plain.heads["detection"], features, batch if targets else None)
    torch.testing.assert_close(got.class_logits, want.class_logits, rtol=0, atol=0)
    torch.testing.assert_close(got.box_deltas, want.box_deltas, rtol=0, atol=0)
    pairs = (
        [(got.sampled.boxes, want.sampled.boxes), (got.sampled.labels, want.sampled.labels)]
        if targets
        else [(got.boxes, want.boxes), (got.scores, want.scores), (got.classes, want.classes)]
    )
    for x, y in pairs:
        for a, b in zip(x, y, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


MOT_HEAD = {"detector": TINY_HEADS["detection"], "channels": 16, "num_convs": 1,
            "positive_iou": 0.2, "negative_iou": 0.05,  # untrained proposals: loose matches
            "norm_groups": 4, "fc_dim": 32, "embed_dim": 16}  # fmt: skip


def test_an_object_block_over_the_association_group_feeds_the_embedding_head() -> None:
    """MOT is in the association group: a block over it in objects mode gives the embedding head
    vectors; the key RoIs come from the detector's sampled RoIs and the reference RoIs from the
    reference frame's proposals (each a row of the vectors); at inference a detection's
    embedding reads its source proposal's vector."""
    cfg = ModelConfig(
        backbone={"type": "resnet18", "width": 8, "norm": "gn"},
        neck={"type": "fpn", "out_channels": 16, "norm": "gn"},
        interactions=[{**INTRA, "groups": ["association"], "mode": "objects"}],
        tasks={
            "detection": TaskConfig(head=dict(TINY_HEADS["detection"])),
            "mot": TaskConfig(head=MOT_HEAD),
        },
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.interactions[0].object_vectors == {"mot": 16}
    assert model.heads["detection"].box_head.vector_input is None  # not in the block
    randomize(model)
    batch = make_batch(2, ("detection", "mot"))
    batch.references = [make_batch(2, ("detection", "mot"))]
    model.train()
    torch.manual_seed(1)
    losses, outputs = model.losses_and_outputs(batch, ["mot"])
    assert sum(len(k) for k in outputs["mot"].key_embeds) > 0
    losses["mot"].backward()
    assert model.interactions[0].task_tokens.inputs["mot"].weight.grad.abs().sum() > 0
    out = _eval_outputs(model, batch)
    objects, head = out.features.objects, model.heads["mot"]
    rows = torch.cat([v[s] for v, s in zip(objects.task_embeddings["mot"], objects.det_sources,
                                           strict=True)])  # fmt: skip
    pooled = head.pooler(out.features.levels(head.strides), head.strides, objects.detections)
    expected = head.embeddings(pooled + head.vector_input.proj(rows)[:, :, None, None])
    torch.testing.assert_close(torch.cat(out["mot"].embeds), expected, rtol=1e-5, atol=1e-6)
