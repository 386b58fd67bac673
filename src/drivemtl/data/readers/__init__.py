"""Readers of real dataset formats; each registers itself in READERS under its config name."""

from drivemtl.data.readers import bdd100k, cityscapes, kitti, vkitti2
from drivemtl.data.readers.base import READERS, FrameRecord, ImageSetReader

__all__ = ["READERS", "FrameRecord", "ImageSetReader", "bdd100k", "cityscapes", "kitti", "vkitti2"]
