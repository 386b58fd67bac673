"""Head modules on the shared feature container (the task plug-ins' head families build them)."""

from __future__ import annotations

from drivemtl.models.features import Features, FeatureSpec, ObjectFeatures
from drivemtl.models.heads.classification import GlobalPoolClassifier
from drivemtl.models.heads.dense_decoder import SemanticFPNDecoder
from drivemtl.models.heads.detector import TwoStageDetector
from drivemtl.models.heads.keypoint_head import KeypointHead
from drivemtl.models.heads.mask_head import MaskHead

__all__ = [
    "FeatureSpec",
    "Features",
    "GlobalPoolClassifier",
    "KeypointHead",
    "MaskHead",
    "ObjectFeatures",
    "SemanticFPNDecoder",
    "TwoStageDetector",
]
