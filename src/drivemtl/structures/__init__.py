"""Typed containers shared by every layer: samples, batches, instances, predictions, label files."""

from drivemtl.structures.batch import Batch, collate
from drivemtl.structures.instances import Instances
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.sample import LaneLine, Sample, SampleMeta, empty_tags

__all__ = [
    "Batch",
    "FramePrediction",
    "Instances",
    "LaneLine",
    "Sample",
    "SampleMeta",
    "collate",
    "empty_tags",
]
