"""Multi-object tracking with QDTrack: quasi-dense embeddings of the detections, tracked online.

The head (`quasi_dense`) embeds the object stream's detections; `predictions` gives the boxes
(`FramePrediction.detections`, the detection head's boxes in the same order) with track ids -1,
and `update_state` runs the tracker (`drivemtl.ops.embedding_tracker`) per video on them, with
the tracker memory kept in the inference state outside the network. Ids: >= 0 a track,
-1 neither a track nor suppressed (a low-score box), -2 a suppressed duplicate; writers and the
MOT evaluator keep only ids >= 0. Trained on clips (key + reference frame) of samples with track
ids; the detector (a support task when detection is not enabled) comes from `head.detector`.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from drivemtl.config.loader import ConfigError
from drivemtl.models.heads.embedding_head import EmbeddingOutputs
from drivemtl.ops.embedding_tracker import QuasiDenseTracker, TrackerConfig, TrackerMemory
from drivemtl.structures.batch import Batch
from drivemtl.structures.bdd import THING_CLASSES
from drivemtl.structures.instances import Instances
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import TASKS, Task, empty_predictions
from drivemtl.tasks.coords import boxes_to_original

MEMORY_KEY = "tracker"


class MOTExtras(BaseModel):
    """MOT extras: the online tracker's thresholds (`TrackerConfig` fields; QDTrack defaults)."""

    model_config = ConfigDict(extra="forbid")

    tracker: dict[str, float | int | bool] = Field(default_factory=dict)


@TASKS.register("mot")
class MOTTask(Task):
    """Tracked boxes of THING_CLASSES; target `Batch.instances` with `track_ids` on clips."""

    name = "mot"
    group = "association"
    kind = "roi_embeddings"
    metric = "HOTA"
    default_head = "quasi_dense"
    Extras = MOTExtras
    classes = THING_CLASSES

    def __init__(self, config=None) -> None:
        super().__init__(config)
        known = {f.name for f in fields(TrackerConfig)}
        unknown = sorted(set(self.options.tracker) - known)
        if unknown:
            raise ConfigError(
                f"model.tasks.mot.head.tracker: unknown option(s) {unknown}; "
                f"known: {', '.join(sorted(known))}"
            )
        self.tracker = QuasiDenseTracker(TrackerConfig(**self.options.tracker))

    def labeled(self, batch: Batch) -> Tensor:
        """Samples labelled for MOT whose instances carry track ids."""
        mask = batch.is_labeled(self.name).clone()
        for i, inst in enumerate(batch.instances):
            if inst is None or inst.track_ids is None:
                mask[i] = False
        return mask

    def predictions(self, outputs: EmbeddingOutputs, batch: Batch) -> list[FramePrediction]:
        """The embedded detections in original-image pixels, track ids still -1."""
        if outputs.embeds is None or outputs.boxes is None:
            raise ValueError("mot postprocess needs outputs of an inference forward pass")
        predictions = empty_predictions(batch)
        for i, pred in enumerate(predictions):
            boxes = boxes_to_original(outputs.boxes[i].float(), pred.meta, batch.image_sizes[i])
            pred.detections = Instances(
                boxes=boxes.cpu(),
                classes=outputs.classes[i].cpu(),  # type: ignore[index]
                scores=outputs.scores[i].float().cpu(),  # type: ignore[index]
                track_ids=torch.full((len(boxes),), -1, dtype=torch.int64),
            )
        return predictions

    def update_state(
        self,
        predictions: list[FramePrediction],
        outputs: EmbeddingOutputs,
        batch: Batch,
        states: list[dict[str, Any]],
    ) -> None:
        """Track each frame's detections against its video's memory; sets `track_ids`."""
        if outputs.embeds is None:
            raise ValueError("mot tracking needs outputs of an inference forward pass")
        for i, (pred, state) in enumerate(zip(predictions, states, strict=True)):
            det = pred.detections
            embeds = outputs.embeds[i]
            if det is None or len(det) != len(embeds):
                raise ValueError(
                    f"frame {pred.meta.name}: {len(embeds)} embeddings but "
                    f"{0 if det is None else len(det)} detections to track"
                )
            memory = state.setdefault(MEMORY_KEY, TrackerMemory())
            frame = pred.meta.frame_index if pred.meta.frame_index is not None else 0
            scores = det.scores if det.scores is not None else torch.ones(len(det))
            ids = self.tracker.update(memory, det.boxes, scores, det.classes, embeds, frame)
            pred.detections = replace(det, track_ids=ids)
