"""Optical flow, unsupervised as in VTDNet: forward flow from each key frame to its reference.

The head (`pwc_flow`) predicts flow from the key and reference frames' pixel features; it trains
on clips without flow labels, so a sample is labelled for the task when it has a reference frame
that is another frame (a still image's copy of itself teaches nothing). Predictions:
`FramePrediction.flow` [2, H, W] in pixels of the original image (None for a frame read without
a reference). Evaluation (EPE, Fl-all where true flow is labelled, VTDNet's mask-warping proxy)
is `drivemtl.evaluation.flow`; it needs clips whose reference is the next frame
(`clip: {length: 2, sampling: next}`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from drivemtl.models.heads.pwc_flow import FlowOutputs, upsample_flow
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.sample import SampleMeta
from drivemtl.tasks.base import TASKS, Task, empty_predictions
from drivemtl.tasks.coords import dense_to_original


def flow_to_original(flow: Tensor, meta: SampleMeta, image_size: tuple[int, int]) -> Tensor:
    """[2, H, W] flow over the padded input -> over the original image: padding cut, a flip
    undone (x negated), the crop placed back and the map resized, vectors scaled with it."""
    out = dense_to_original(flow, meta, image_size).clone()
    if meta.flipped:
        out[0] = -out[0]
    height, width = meta.orig_size
    sy, sx = meta.scale
    resized = (round(height * sy), round(width * sx))
    out[0] *= width / resized[1]
    out[1] *= height / resized[0]
    return out


@TASKS.register("flow")
class FlowTask(Task):
    """Forward optical flow key -> reference frame, trained unsupervised on clips."""

    name = "flow"
    group = "association"
    kind = "flow"
    metric = "EPE"
    default_head = "pwc_flow"

    def labeled(self, batch: Batch) -> Tensor:
        """Samples whose (first) reference frame is another frame; not flow labels."""
        reference = batch.reference
        mask = torch.zeros(len(batch), dtype=torch.bool, device=batch.images.device)
        if reference is None:
            return mask
        for i, (key, ref) in enumerate(zip(batch.metas, reference.metas, strict=True)):
            mask[i] = key.name != ref.name
        return mask

    def predictions(self, outputs: FlowOutputs, batch: Batch) -> list[FramePrediction]:
        """The finest forward flow upsampled to the input and mapped to each original image."""
        predictions = empty_predictions(batch)
        finest = outputs.finest
        if finest is None:
            return predictions
        full = upsample_flow(finest.float(), outputs.input_size)
        for i, pred in enumerate(predictions):
            pred.flow = flow_to_original(full[i], pred.meta, batch.image_sizes[i]).cpu()
        return predictions
