"""The quasi-dense embedding head: layer shapes and initialisation, the RoI sampling rules on a
hand-made image, and its training / inference outputs on hand-made object streams."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from drivemtl.models.features import Features, FeatureSpec, ObjectFeatures
from drivemtl.models.heads.embedding_head import (
    EmbeddingSampling,
    QuasiDenseEmbeddingHead,
    sample_embedding_rois,
)
from drivemtl.structures.batch import collate
from drivemtl.structures.instances import Instances
from drivemtl.structures.sample import Sample, SampleMeta

SPEC = FeatureSpec(image_channels=32, pixel_channels=16, strides=(4, 8, 16, 32, 64))


def test_default_layers_are_qdtracks() -> None:
    head = QuasiDenseEmbeddingHead(FeatureSpec(64, 256, (4, 8, 16, 32, 64)))
    convs = [m for m in head.convs if isinstance(m, nn.Conv2d)]
    norms = [m for m in head.convs if isinstance(m, nn.GroupNorm)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (256, 256, (3, 3))
    ] * 4
    assert [n.num_groups for n in norms] == [32] * 4
    assert (head.fc.in_features, head.fc.out_features) == (256 * 7 * 7, 1024)
    assert (head.embed.in_features, head.embed.out_features) == (1024, 256)
    w = head.embed.weight
    w = w.detach()
    assert abs(float(w.mean())) < 1e-3 and float(w.std()) == pytest.approx(0.01, rel=0.02)
    assert head.embed.bias.abs().sum() == 0
    assert head.pooler.output_size == (7, 7) and head.strides == (4, 8, 16, 32)


def test_widths_are_options_and_groups_must_divide() -> None:
    head = QuasiDenseEmbeddingHead(SPEC, channels=8, num_convs=2, norm_groups=4, fc_dim=12,
                                   embed_dim=5, resolution=5)  # fmt: skip
    assert head.fc.in_features == 8 * 25 and head.embed.out_features == 5
    pooled = torch.randn(3, 16, 5, 5)
    assert head.embeddings(pooled).shape == (3, 5)
    with pytest.raises(ValueError, match="GroupNorm"):
        QuasiDenseEmbeddingHead(SPEC, channels=10, norm_groups=4)


def test_sampling_rules_on_a_hand_made_image() -> None:
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 70.0, 70.0]])
    ids = torch.tensor([7, 9])
    proposals = torch.tensor(
        [
            [0.0, 0.0, 10.0, 9.0],  # IoU 0.9 with gt 0: positive (id 7)
            [0.0, 0.0, 10.0, 5.0],  # IoU 0.5: neither
            [50.0, 50.0, 70.0, 66.0],  # IoU 0.8 with gt 1: positive (id 9)
            [100.0, 100.0, 110.0, 110.0],  # negatives ...
            [120.0, 100.0, 130.0, 110.0],
            [140.0, 100.0, 150.0, 110.0],
            [160.0, 100.0, 170.0, 110.0],
            [180.0, 100.0, 190.0, 110.0],
            [200.0, 100.0, 210.0, 110.0],
            [220.0, 100.0, 230.0, 110.0],
            [0.0, 0.0, 10.0, 2.9],  # IoU 0.29: negative
        ]
    )
    cfg = EmbeddingSampling()
    out = sample_embedding_rois(proposals, gt, ids, cfg)
    # 2 proposals + 2 gt boxes positive; 8 negatives, all kept (cap 3 x 4 = 12).
    assert int(out.positive.sum()) == 4 and len(out.boxes) == 12
    assert sorted(out.track_ids[out.positive].tolist()) == [7, 7, 9, 9]
    assert (out.track_ids[~out.positive] == -1).all()
    assert not any(torch.equal(b, proposals[1]) for b in out.boxes)  # the IoU-0.5 box
    # The cap: at most 3 negatives per positive.
    one = sample_embedding_rois(proposals[3:], gt[:1], ids[:1], cfg)
    assert int(one.positive.sum()) == 1 and len(one.boxes) == 4  # the gt box + 3 negatives
    # Positive fraction and RoIs per image: 4 RoIs, at most 2 positives.
    small = sample_embedding_rois(proposals, gt, ids, EmbeddingSampling(rois_per_image=4))
    assert int(small.positive.sum()) == 2 and len(small.boxes) == 4
    # Without ground-truth boxes added, only the proposals are candidates.
    no_gt = sample_embedding_rois(proposals, gt, ids, EmbeddingSampling(add_ground_truth=False))
    assert int(no_gt.positive.sum()) == 2
    # An ignore region makes boxes overlapping it unused (not negatives); 2 positives cap the
    # 8 negatives at 6.
    ignored = sample_embedding_rois(proposals, gt, ids, cfg, gt_ignore=torch.tensor([True, False]))
    assert int(ignored.positive.sum()) == 2 and len(ignored.boxes) == 8
    assert not any(torch.equal(b, p) for b in ignored.boxes for p in proposals[:2])


def _features(batch_size: int, objects: ObjectFeatures) -> Features:
    g = torch.Generator().manual_seed(1)
    pixel = [torch.randn(batch_size, 16, 64 // s, 96 // s, generator=g) for s in SPEC.strides]
    return Features(
        image=pixel[-1], pixel=pixel, strides=SPEC.strides, input_size=(64, 96),
        image_sizes=[(64, 96)] * batch_size, objects=objects,
    )  # fmt: skip


def _sample(labelled: bool) -> Sample:
    inst = Instances(torch.tensor([[10.0, 10.0, 40.0, 50.0], [50.0, 20.0, 90.0, 60.0]]),
                     torch.tensor([0, 2]), torch.tensor([4, 6]))  # fmt: skip
    meta = SampleMeta(name="v/0.jpg", image_set="t", orig_size=(64, 96), image_size=(64, 96))
    return Sample(image=torch.zeros(3, 64, 96), meta=meta, instances=inst,
                  tasks=frozenset({"mot"}) if labelled else frozenset())  # fmt: skip


def test_training_outputs_key_positives_and_reference_rois() -> None:
    head = QuasiDenseEmbeddingHead(SPEC, channels=8, num_convs=1, norm_groups=4, fc_dim=8,
                                   embed_dim=4)  # fmt: skip
    proposals = [torch.tensor([[11.0, 10.0, 40.0, 50.0], [0.0, 0.0, 8.0, 8.0]])] * 2
    batch = collate([_sample(True), _sample(False)])
    batch.references = [collate([_sample(True), _sample(False)])]
    features = _features(2, ObjectFeatures(proposals=proposals))
    features.reference = _features(2, ObjectFeatures(proposals=proposals))
    out = head(features, batch)
    assert out.key_embeds[0].shape == (3, 4)  # gt 0, gt 1, proposal 0
    assert sorted(out.key_ids[0].tolist()) == [4, 4, 6]
    assert len(out.ref_embeds[0]) == 4 and sorted(out.ref_ids[0].tolist()) == [-1, 4, 4, 6]
    assert len(out.key_embeds[1]) == 0 and len(out.ref_embeds[1]) == 0  # not labelled


def test_inference_embeds_the_detections() -> None:
    head = QuasiDenseEmbeddingHead(SPEC, channels=8, num_convs=1, norm_groups=4, fc_dim=8,
                                   embed_dim=4).eval()  # fmt: skip
    dets = [torch.tensor([[10.0, 10.0, 40.0, 50.0]]), torch.zeros(0, 4)]
    objects = ObjectFeatures(
        proposals=dets, detections=dets, det_classes=[torch.tensor([2]), torch.zeros(0).long()],
        det_scores=[torch.tensor([0.9]), torch.zeros(0)],
    )  # fmt: skip
    out = head(_features(2, objects))
    assert [e.shape for e in out.embeds] == [(1, 4), (0, 4)]
    assert out.boxes is dets and out.classes[0].tolist() == [2]
