"""The `maskformer` head family: matching, set criterion, semantic inference, lanes' joint classes,
unlabelled samples, config errors, and overfitting a handful of synthetic frames."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from batches import make_batch
from torch import Tensor

import drivemtl.tasks.families.maskformer as mf
from drivemtl.config.loader import ConfigError
from drivemtl.models import build_model
from drivemtl.models.config import ModelConfig, TaskConfig
from drivemtl.models.heads.maskformer import MaskFormerOutputs
from drivemtl.models.summary import summarize
from drivemtl.tasks import TASKS
from drivemtl.tasks.lanes import LANE_GROUPS, encode_joint, joint_table, marginals

TINY = {
    "type": "maskformer", "num_queries": 10, "hidden_dim": 32, "nheads": 4, "dim_feedforward": 64,
    "dec_layers": 2, "mask_dim": 16, "conv_dim": 16, "dropout": 0.0,
}  # fmt: skip
WEIGHTS = mf.LossWeights()


def tiny_model(tasks: tuple[str, ...] = ("semantic",), **head: object) -> torch.nn.Module:
    """ResNet-18 (width 8) + 16-channel FPN with tiny MaskFormer heads for `tasks`."""
    return build_model(
        ModelConfig(
            backbone={"type": "resnet18", "width": 8, "norm": "gn"},
            neck={"type": "fpn", "out_channels": 16, "norm": "gn"},
            tasks={t: TaskConfig(head={**TINY, **head}) for t in tasks},
        )
    )


# -- float64 references, written with loops ------------------------------------------------------
def _focal(x: float, t: float, alpha: float = 0.25, gamma: float = 2.0) -> float:
    p = 1 / (1 + math.exp(-x))
    if t:
        return -alpha * (1 - p) ** gamma * math.log(p)
    return -(1 - alpha) * p**gamma * math.log(1 - p)


def _mask_terms(pred: Tensor, target: Tensor, valid: Tensor) -> tuple[float, float]:
    """(mean focal, dice) of one mask's logits against a binary target over valid pixels."""
    focal, inter, p_sum, t_sum, count = 0.0, 0.0, 0.0, 0.0, 0
    for x, t, v in zip(
        pred.flatten().tolist(), target.flatten().tolist(), valid.flatten().tolist(), strict=True
    ):
        if not v:
            continue
        p = 1 / (1 + math.exp(-x))
        focal += _focal(x, t)
        inter, p_sum, t_sum, count = inter + p * t, p_sum + p, t_sum + t, count + 1
    return focal / count, 1 - (2 * inter + 1) / (p_sum + t_sum + 1)


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    e = [math.exp(v - top) for v in row]
    return [v / sum(e) for v in e]


def reference_loss(logits: Tensor, masks: Tensor, class_maps: Tensor) -> float:
    """One layer's weighted loss: brute-force matching over every injective assignment, CE with
    no-object weight, focal / dice on upsampled masks over valid pixels, / number of masks.
    Targets are twice the mask resolution (the matcher samples every second pixel)."""
    logits, masks = logits.double(), masks.double()
    n, q, k1 = logits.shape
    size = tuple(class_maps.shape[-2:])
    up = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
    ce_num = ce_den = focal = dice = 0.0
    num_masks = 0
    for i in range(n):
        labels = sorted({int(v) for v in class_maps[i].flatten().tolist()} - {255})
        num_masks += len(labels)
        small, valid = class_maps[i, ::2, ::2], class_maps[i] != 255
        probs = [_softmax(logits[i, j].tolist()) for j in range(q)]
        cost = {}
        for j, (g, c) in itertools.product(range(q), enumerate(labels)):
            f, d = _mask_terms(masks[i, j], small == c, small != 255)
            cost[j, g] = -probs[j][c] + 20 * f + d
        best = min(
            itertools.permutations(range(q), len(labels)),
            key=lambda perm: sum(cost[j, g] for g, j in enumerate(perm)),
        )
        classes = [k1 - 1] * q
        for g, j in enumerate(best):
            classes[j] = labels[g]
            f, d = _mask_terms(up[i, j], class_maps[i] == labels[g], valid)
            focal, dice = focal + f, dice + d
        for j in range(q):
            w = 0.1 if classes[j] == k1 - 1 else 1.0
            ce_num += -w * math.log(probs[j][classes[j]])
            ce_den += w
    return ce_num / ce_den + 20 * focal / max(num_masks, 1) + dice / max(num_masks, 1)


def _targets(class_maps: Tensor, num_classes: int) -> list[mf.MaskTargets]:
    return [mf.mask_targets(m, num_classes) for m in class_maps]


# -- matching and criterion ----------------------------------------------------------------------
def test_matching_recovers_a_known_permutation() -> None:
    class_map = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    targets = mf.mask_targets(class_map, num_classes=4)
    perm = torch.tensor([4, 1, 5, 0])  # target g is predicted by query perm[g]
    logits = torch.zeros((6, 5))
    masks = torch.full((6, 4, 4), -8.0)
    for g, j in enumerate(perm.tolist()):
        masks[j][targets.masks[g] > 0] = 8.0
        logits[j, int(targets.labels[g])] = 4.0
    queries, index = mf.match(logits, masks, targets, WEIGHTS)
    assert dict(zip(index.tolist(), queries.tolist(), strict=True)) == dict(
        enumerate(perm.tolist())
    )


def test_layer_loss_matches_a_float64_reference() -> None:
    torch.manual_seed(0)
    logits = torch.randn((2, 4, 4))  # 3 classes + no object
    masks = torch.randn((2, 4, 3, 3)) * 2
    class_maps = torch.randint(0, 3, (2, 6, 6))
    class_maps[0, :2, :] = 255  # ignored band
    class_maps[1] = torch.where(class_maps[1] == 2, 1, class_maps[1])  # only two classes here
    parts = mf.layer_losses(logits, masks, _targets(class_maps, 3), WEIGHTS)
    ours = parts["ce"] + 20 * parts["focal"] + parts["dice"]
    assert float(ours) == pytest.approx(reference_loss(logits, masks, class_maps), rel=1e-5)


def test_deep_supervision_sums_every_layer() -> None:
    torch.manual_seed(1)
    class_maps = torch.randint(0, 3, (1, 6, 6))
    layers = [(torch.randn((1, 4, 4)), torch.randn((1, 4, 3, 3))) for _ in range(3)]
    total = mf.set_criterion(layers, _targets(class_maps, 3), WEIGHTS)
    expected = sum(reference_loss(lg, mk, class_maps) for lg, mk in layers)
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_ignored_pixels_change_neither_loss_nor_gradient() -> None:
    torch.manual_seed(2)
    class_maps = torch.randint(0, 3, (1, 4, 4))
    class_maps[0, :, :2] = 255
    targets = _targets(class_maps, 3)
    logits = torch.randn((1, 4, 4))
    masks = torch.randn((1, 4, 4, 4), requires_grad=True)  # same size as the targets
    loss = mf.set_criterion([(logits, masks)], targets, WEIGHTS)
    (grad,) = torch.autograd.grad(loss, masks)
    assert bool((grad[..., :2] == 0).all()) and bool((grad[..., 2:] != 0).any())
    changed = masks.detach().clone()
    changed[..., :2] = torch.randn_like(changed[..., :2]) * 50
    again = mf.set_criterion([(logits, changed)], targets, WEIGHTS)
    assert float(again) == pytest.approx(float(loss.detach()), rel=1e-6)


def _outputs(batch_size: int, q: int, k: int, requires_grad: bool = False) -> MaskFormerOutputs:
    """Random outputs for a batch of 64x96 images (stride-4 masks 16x24)."""
    logits = torch.randn((batch_size, q, k + 1), requires_grad=requires_grad)
    masks = torch.randn((batch_size, q, 16, 24), requires_grad=requires_grad)
    return MaskFormerOutputs(logits, masks, [], (64, 96))


def test_an_unlabelled_image_contributes_exactly_zero() -> None:
    torch.manual_seed(3)
    task = TASKS.get("semantic")(TaskConfig(head=TINY))
    batch = make_batch(2, ("semantic",), labeled=[True, False])
    outputs = _outputs(2, 6, 19, requires_grad=True)
    loss = task.loss(outputs, batch)
    grads = torch.autograd.grad(loss, (outputs.pred_logits, outputs.pred_masks))
    assert all(bool((g[1] == 0).all()) and bool((g[0] != 0).any()) for g in grads)
    alone = MaskFormerOutputs(outputs.pred_logits[:1], outputs.pred_masks[:1], [], (64, 96))
    single = task.loss(alone, make_batch(1, ("semantic",)))
    assert float(loss.detach()) == pytest.approx(float(single.detach()))
    nobody = make_batch(2, ("semantic",), labeled=[False, False])
    zero = task.loss(outputs, nobody)
    assert float(zero) == 0.0 and not zero.requires_grad


# -- inference -----------------------------------------------------------------------------------
def test_semantic_inference_is_the_sum_over_queries() -> None:
    torch.manual_seed(4)
    outputs = _outputs(2, 5, 3)
    scores = mf.semantic_scores(outputs)
    for b in range(2):
        expected = torch.zeros((3, 64, 96), dtype=torch.float64)
        for q in range(5):
            p = outputs.pred_logits[b, q].double().softmax(-1)[:-1]
            m = F.interpolate(outputs.pred_masks[b, q][None, None].double(), size=(64, 96),
                              mode="bilinear", align_corners=False)[0, 0].sigmoid()  # fmt: skip
            expected += p[:, None, None] * m
        expected /= expected.sum(0, keepdim=True)
        torch.testing.assert_close(scores[b].double(), expected, atol=1e-6, rtol=1e-5)
    task = TASKS.get("drivable")(TaskConfig(head=TINY))
    decoded = task.family.decode(outputs, make_batch(2, ("drivable",)))
    torch.testing.assert_close(decoded["logits"].softmax(1), scores, atol=1e-6, rtol=1e-5)


def test_lanes_joint_classes_round_trip() -> None:
    table = joint_table()
    assert len(table) == 33 and table[0].tolist() == [0, 0, 0]
    assert len({tuple(r) for r in table.tolist()}) == 33
    joint = torch.randint(0, 33, (2, 5, 7))
    groups = table[joint].permute(0, 3, 1, 2)  # [n, 3, H, W]
    assert torch.equal(encode_joint(groups), joint)
    scores = F.one_hot(joint, 33).permute(0, 3, 1, 2).double() * 0.9 + 0.1 / 33
    task = TASKS.get("lanes")(TaskConfig(head=TINY))
    branches = task.branch_outputs_from_class_scores(scores)
    for channel, (group, classes) in enumerate(LANE_GROUPS.items()):
        probs = branches[group].softmax(1)
        assert probs.shape[1] == classes
        assert torch.equal(probs.argmax(1), groups[:, channel])
        torch.testing.assert_close(probs, marginals(scores)[group])
        # the marginal of class c is the joint mass of the classes whose group value is c
        for c in range(classes):
            mass = scores[:, table[:, channel] == c].sum(1)
            torch.testing.assert_close(probs[:, c], mass)
    # partly-background or ignored pixels have no joint class
    odd = torch.tensor([[1, 0, 1], [0, 1, 0], [255, 1, 1], [3, 1, 2]]).T[None, :, None, :]
    assert encode_joint(odd).flatten().tolist() == [255, 255, 255, 1 + (2 * 2 + 0) * 2 + 1]


# -- options, model and training -----------------------------------------------------------------
def test_defaults_are_the_references_and_bad_options_name_the_key() -> None:
    o = mf.MaskFormerOptions()
    assert (o.num_queries, o.hidden_dim, o.nheads, o.dim_feedforward) == (100, 256, 8, 2048)
    assert (o.dec_layers, o.mask_dim, o.deep_supervision, o.pre_norm) == (6, 256, True, False)
    assert (o.class_weight, o.mask_weight, o.dice_weight, o.no_object_weight) == (1, 20, 1, 0.1)
    with pytest.raises(ConfigError, match=r"model\.tasks\.semantic\.head\.nheads"):
        TASKS.get("semantic")(TaskConfig(head={**TINY, "nheads": 5}))
    with pytest.raises(ConfigError, match=r"model\.tasks\.depth\.head\.type: 'maskformer'"):
        TASKS.get("depth")(TaskConfig(head={"type": "maskformer"}))


def test_model_losses_predictions_and_summary() -> None:
    torch.manual_seed(5)
    tasks = ("semantic", "drivable", "lanes")
    model = tiny_model(tasks)
    batch = make_batch(2, tasks, labeled=[True, False])
    losses = model.losses(batch)
    assert set(losses) == set(tasks) and all(bool(v.isfinite()) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    preds = model.predict(batch)
    assert preds[0].semantic.shape == (64, 96) and preds[0].drivable.shape == (64, 96)
    assert preds[1].lanes.shape == (3, 64, 96)
    conf = preds[0].semantic_confidence
    assert bool((conf > 0).all()) and bool((conf <= 1 + 1e-6).all())
    outputs = model(batch, ("semantic",), targets=False).heads["semantic"]
    entropy = model.tasks["semantic"].domain_map(outputs, batch)
    assert entropy.shape == (2, 19, 64, 96) and bool(entropy.isfinite().all())
    heads = {c.name: c for c in summarize(model, (64, 96)).heads}
    assert all(heads[f"heads.{t}"].macs > 0 for t in tasks)


def _miou(model: torch.nn.Module, batch) -> float:
    model.eval()
    preds = model.predict(batch)
    model.train()
    ious = []
    for c in range(19):
        inter = union = 0
        for pred, target in zip(preds, batch.semantic, strict=True):
            p, t = pred.semantic == c, target == c
            inter, union = inter + int((p & t).sum()), union + int((p | t).sum())
        if union:
            ious.append(inter / union)
    return sum(ious) / len(ious)


def _train(steps: int) -> float:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = tiny_model()
        batch = make_batch(3, ("semantic",))
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(steps):
            loss = model.losses(batch)["semantic"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return _miou(model, batch)
    finally:
        torch.set_num_threads(threads)


def test_overfits_a_few_frames() -> None:
    assert _train(80) > 0.97


def test_a_broken_matching_does_not_overfit(monkeypatch: pytest.MonkeyPatch) -> None:
    def random_match(logits, masks, targets, weights):  # queries drawn at random
        g = len(targets.labels)
        return torch.randperm(logits.shape[0])[:g], torch.arange(g)

    monkeypatch.setattr(mf, "match", random_match)
    assert _train(40) < 0.5
