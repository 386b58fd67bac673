"""MultiTaskNet: composition, parameter names, masking semantics, typed predictions."""

from __future__ import annotations

import pytest
import torch
from batches import ALL_TASKS, make_batch, tiny_config

from drivemtl.models import MultiTaskNet, build_model
from drivemtl.models.multitask import ModelOutputs


@pytest.fixture(scope="module")
def model() -> MultiTaskNet:
    torch.manual_seed(0)
    return build_model(tiny_config())


def test_parameter_names_and_decoder_prefixes(model: MultiTaskNet) -> None:
    assert model.task_names == list(ALL_TASKS)
    names = [n for n, _ in model.named_parameters()]
    assert all(n.split(".")[0] in ("backbone", "neck", "heads") for n in names)
    assert {n.split(".")[1] for n in names if n.startswith("heads.")} == set(ALL_TASKS)
    prefixes = model.decoder_prefixes()
    assert prefixes["semantic"] == ["heads.semantic."]
    assert prefixes["instance"] == ["heads.instance."]
    owned = [n for n in names if any(n.startswith(p) for ps in prefixes.values() for p in ps)]
    assert set(owned) == {n for n in names if n.startswith("heads.")}


def test_instance_only_model_owns_the_detection_head() -> None:
    model = build_model(tiny_config(("instance", "semantic")))
    assert model.task_names == ["instance", "semantic"]
    assert "detection" in model.heads
    assert model.decoder_prefixes()["instance"] == ["heads.instance.", "heads.detection."]
    batch = make_batch(1, ("instance",))
    model.train()
    losses = model.losses(batch)
    assert set(losses) == {"instance", "semantic"} and float(losses["semantic"]) == 0.0
    # The instance loss carries the detection head's loss (RPN + box) on top of the mask loss.
    outputs = model(batch, ["instance"], targets=True)
    mask_only = model.tasks["instance"].loss(outputs["instance"], batch)
    assert float(losses["instance"].detach()) > float(mask_only.detach()) > 0


def test_forward_runs_only_requested_heads(model: MultiTaskNet) -> None:
    batch = make_batch(1)
    model.eval()
    with torch.no_grad():
        outputs = model(batch, tasks=["semantic", "pose"])
    assert isinstance(outputs, ModelOutputs)
    assert set(outputs) == {"semantic", "detection", "pose"}
    assert outputs.features.image.shape[1] == model.spec.image_channels
    with pytest.raises(ValueError, match="not enabled"):
        model(batch, tasks=["flow"])


def test_gradients_come_only_from_labelled_samples(model: MultiTaskNet) -> None:
    """Sample 1 carries every target but is labelled for nothing: its image gets no gradient.

    The tiny model uses GroupNorm everywhere, so samples do not interact in the forward pass.
    """
    model.train()
    batch = make_batch(2, labeled=[True, False])
    batch.images.requires_grad_(True)
    losses = model.losses(batch)
    total = sum(losses.values())
    total.backward()
    grad = batch.images.grad
    assert grad[0].abs().sum() > 0
    assert torch.equal(grad[1], torch.zeros_like(grad[1]))


def test_no_labels_gives_exact_zero_and_no_head_gradient(model: MultiTaskNet) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    batch = make_batch(2, ("semantic",), labeled=[True, True])
    losses = model.losses(batch)
    assert set(losses) == set(ALL_TASKS)
    for name, value in losses.items():
        if name != "semantic":
            assert float(value) == 0.0 and not value.requires_grad
    losses["semantic"].backward()
    for name, param in model.named_parameters():
        if name.startswith("heads.") and not name.startswith("heads.semantic."):
            assert param.grad is None, name


def test_predict_returns_typed_predictions_in_original_size(model: MultiTaskNet) -> None:
    model.eval()
    batch = make_batch(2)
    predictions = model.predict(batch)
    assert len(predictions) == 2
    pred = predictions[1]
    assert pred.meta is batch.metas[1]
    assert pred.tags.shape == (3,)
    assert pred.semantic.shape == (64, 96) and pred.drivable.shape == (64, 96)
    assert pred.lanes.shape == (3, 64, 96)
    assert pred.depth.shape == (64, 96) and pred.edges.shape == (64, 96)
    assert torch.allclose(pred.normals.norm(dim=0), torch.ones(64, 96), atol=1e-4)
    assert pred.detections is not None and pred.instances is not None and pred.poses is not None
    if len(pred.instances):
        assert pred.instances.masks.shape[1:] == (64, 96)
    only = model.predict(batch, tasks=["tagging"])
    assert only[0].semantic is None and only[0].tags is not None


def _stages() -> list:
    from drivemtl.models.stage import Stage

    return [
        Stage("adapter", "adapters.0", (), (), ("pixel",)),
        Stage("group", "groups.seg", ("pixel",), ("group:seg",)),
        Stage("interaction", "interactions.0", ("objects",), (), ("group:seg",)),
        Stage("interaction", "interactions.1", (), (), ("group:seg",)),
        Stage("decoder", "heads.det", ("pixel",), ("objects", "out:det"), (), "det"),
        Stage("decoder", "heads.sem", ("group:seg",), ("task:sem",), (), "sem"),
        Stage("decoder", "heads.tag", ("image",), ("out:tag",), (), "tag"),
        Stage("exchange", "exchanges.0", ("task:sem",), (), ("task:sem",)),
        Stage("predictor", "heads.sem", ("task:sem",), ("out:sem",), (), "sem"),
    ]


def test_stage_order_follows_declared_streams() -> None:
    from drivemtl.models.multitask import order_stages

    order = [(s.kind, s.path) for s in order_stages(_stages(), ["out:sem"])]
    # producers, then modifiers in list order, then readers; the tagging head is not needed.
    assert order == [
        ("adapter", "adapters.0"),
        ("group", "groups.seg"),
        ("decoder", "heads.det"),
        ("interaction", "interactions.0"),
        ("interaction", "interactions.1"),
        ("decoder", "heads.sem"),
        ("exchange", "exchanges.0"),
        ("predictor", "heads.sem"),
    ]
    tag_only = [s.path for s in order_stages(_stages(), ["out:tag"])]
    assert tag_only == ["heads.tag"]  # no stage modifies image features


def test_stage_order_reports_missing_streams_and_circles() -> None:
    from drivemtl.models.multitask import order_stages
    from drivemtl.models.stage import Stage

    with pytest.raises(ValueError, match=r"stream 'objects' \(needed by \['a'\]\) is provided by"):
        order_stages([Stage("decoder", "a", ("objects",), ("out:a",), (), "a")], ["out:a"])
    circle = [
        Stage("decoder", "a", ("task:b",), ("task:a", "out:a"), (), "a"),
        Stage("decoder", "b", ("task:a",), ("task:b",), (), "b"),
    ]
    with pytest.raises(ValueError, match="in a circle"):
        order_stages(circle, ["out:a"])


def test_stage_prefixes_and_fixed_parameters() -> None:
    from batches import tiny_config as config

    cfg = config(("semantic",))
    cfg.backbone = {"type": "resnet18", "width": 8, "norm": "bn", "frozen_stages": 1}
    net = build_model(cfg)
    prefixes = net.stage_prefixes()
    assert prefixes["backbone"] == ["backbone."] and prefixes["decoder"] == ["heads.semantic."]
    assert prefixes["predictor"] == ["heads.semantic.branches."]
    fixed = net.fixed_parameter_names()
    assert "backbone.conv1.weight" in fixed and "backbone.layer1.0.conv1.weight" in fixed
    assert not any(n.startswith(("backbone.layer2", "neck.", "heads.")) for n in fixed)


def test_predict_with_state_carries_a_stateful_task_across_frames() -> None:
    """A toy tracker numbers detections consecutively per video: ids continue over a video's
    frames and restart for another video, while the stateless tasks predict as before."""
    from batches import tiny_config as config

    torch.manual_seed(0)
    net = build_model(config(("detection", "semantic"))).eval()

    def number_detections(predictions, outputs, batch, states) -> None:
        for pred, state in zip(predictions, states, strict=True):
            start = state.get("next_id", 0)
            count = len(pred.detections.boxes)
            pred.detections.track_ids = torch.arange(start, start + count)
            state["next_id"] = start + count

    net.tasks["detection"].update_state = number_detections
    frames = []
    for video, frame in (("a", 0), ("a", 1), ("b", 0)):
        batch = make_batch(1)
        batch.metas[0].video, batch.metas[0].frame_index = video, frame
        frames.append(batch)
    state = None
    ids = []
    for batch in frames:
        predictions, state = net.predict_with_state(batch, state, ["detection", "semantic"])
        ids.append(predictions[0].detections.track_ids.tolist())
        plain = net.predict(batch, ["semantic"])[0].semantic
        assert torch.equal(predictions[0].semantic, plain)
    n0, n1 = len(ids[0]), len(ids[1])
    assert n0 > 0 and ids[0] == list(range(n0)) and ids[1] == list(range(n0, n0 + n1))
    assert ids[2] == list(range(len(ids[2])))  # video b starts from 0
    assert set(state.videos) == {"a", "b"}


def test_reference_stream_is_extracted_only_for_stages_that_read_it() -> None:
    """A head declaring the `reference` stream gets the reference frames' backbone + neck
    features (with gradient) and their proposals (without); other heads, inference, and batches
    without clips leave `features.reference` empty."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: faster without thread hand-offs
    try:
        _check_reference_stream()
    finally:
        torch.set_num_threads(threads)


def _check_reference_stream() -> None:
    from batches import tiny_config as config

    from drivemtl.models.features import OBJECTS, PIXEL, REFERENCE

    torch.manual_seed(0)
    net = build_model(config(("detection", "semantic")))
    seen = []

    class ReadsReference(torch.nn.Module):
        needs = (PIXEL, OBJECTS, REFERENCE)

        def forward(self, features, batch=None):
            seen.append(features.reference)
            return torch.zeros(())

    batch = make_batch(2, ("detection", "semantic"))
    ref = make_batch(2, ("detection", "semantic"))
    ref.images = ref.images.flip(-1)
    batch.references = [ref]
    assert net.forward(batch, ["semantic"], targets=True).features.reference is None
    net.heads["semantic"] = ReadsReference()
    net.stage_list = net._stage_list()
    net._schedules.clear()
    out = net.forward(batch, ["semantic"], targets=True)
    reference = seen[-1]
    assert reference is not None and out.features.reference is reference
    expected = net.extract(ref.images, ref.image_sizes)
    assert torch.allclose(reference.pixel[0], expected.pixel[0], atol=1e-6)
    assert reference.pixel[0].requires_grad
    assert reference.objects is not None and len(reference.objects.proposals) == 2
    assert not reference.objects.proposals[0].requires_grad
    net.forward(batch, ["semantic"], targets=False)
    assert seen[-1] is None  # inference: no reference features
    batch.references = []
    net.forward(batch, ["semantic"], targets=True)
    assert seen[-1] is None  # no clip
