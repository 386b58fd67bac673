"""Low-level operators: boxes, NMS, RoIAlign, matching, heatmaps, warping, correlation, DCNv2.

Pure PyTorch (torchvision's compiled kernels are used when they import); no task or config
knowledge lives here.
"""

from drivemtl.ops.boxes import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    generalized_box_iou,
)
from drivemtl.ops.correlation import correlation, cost_volume
from drivemtl.ops.deform_conv import DeformConv2dPack, deform_conv2d
from drivemtl.ops.heatmaps import gaussian_heatmaps, heatmap_argmax, heatmap_peaks
from drivemtl.ops.matching import hungarian_match
from drivemtl.ops.nms import batched_nms, nms
from drivemtl.ops.roi_align import MultiScaleRoIAlign, assign_fpn_levels, roi_align
from drivemtl.ops.warp import warp_by_flow

__all__ = [
    "DeformConv2dPack",
    "MultiScaleRoIAlign",
    "assign_fpn_levels",
    "batched_nms",
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xyxy_to_cxcywh",
    "clip_boxes",
    "correlation",
    "cost_volume",
    "decode_boxes",
    "deform_conv2d",
    "encode_boxes",
    "gaussian_heatmaps",
    "generalized_box_iou",
    "heatmap_argmax",
    "heatmap_peaks",
    "hungarian_match",
    "nms",
    "roi_align",
    "warp_by_flow",
]
