"""Task heads on the shared feature hierarchy; `HEADS` maps a config `head.type` to a factory."""

from __future__ import annotations

from drivemtl.models.heads.classification import GlobalPoolClassifier
from drivemtl.models.heads.dense_decoder import SemanticFPNDecoder
from drivemtl.models.heads.detector import TwoStageDetector
from drivemtl.models.heads.features import Features, FeatureSpec, InstanceFeatures
from drivemtl.models.heads.keypoint_head import KeypointHead
from drivemtl.models.heads.mask_head import MaskHead
from drivemtl.registry import Registry

HEADS: Registry[type] = Registry("head")
HEADS.add("semantic_fpn", SemanticFPNDecoder)
HEADS.add("global_pool", GlobalPoolClassifier)
HEADS.add("two_stage", TwoStageDetector)
HEADS.add("mask_rcnn", MaskHead)
HEADS.add("keypoint_rcnn", KeypointHead)

__all__ = [
    "HEADS",
    "FeatureSpec",
    "Features",
    "GlobalPoolClassifier",
    "InstanceFeatures",
    "KeypointHead",
    "MaskHead",
    "SemanticFPNDecoder",
    "TwoStageDetector",
]
