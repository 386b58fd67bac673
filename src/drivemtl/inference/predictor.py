"""Run a trained multi-task model on raw frames: config + checkpoint in, typed predictions out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from drivemtl.data.config import TransformConfig
from drivemtl.data.transforms import build_transforms
from drivemtl.engine.checkpoint import CheckpointError, load_into, load_weights
from drivemtl.engine.run_config import RunConfig
from drivemtl.models import build_model
from drivemtl.models.weights import fit_problems
from drivemtl.structures.batch import Batch, collate
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.sample import Sample, SampleMeta
from drivemtl.structures.state import InferenceState


def load_model(config: RunConfig, checkpoint: Path, device: str = "cpu") -> torch.nn.Module:
    """Build the config's model and load every one of its tensors from a safetensors checkpoint.

    A checkpoint that lacks tensors of the model, has extra ones, or has other shapes was written
    for another config: that is a one-line CheckpointError naming the file.
    """
    model = build_model(config.model)
    state = load_weights(checkpoint)
    problems = fit_problems(model.state_dict(), state)
    if problems:
        raise CheckpointError(
            f"{checkpoint}: does not match the model of this config: {'; '.join(problems)}"
        )
    load_into(model, state, source=str(checkpoint))
    return model.to(device).eval()


class Predictor:
    """Preprocesses frames like evaluation does (resize + normalise) and runs `model.predict`."""

    def __init__(
        self,
        config: RunConfig,
        checkpoint: Path,
        device: str = "cpu",
        tasks: Sequence[str] | None = None,
    ) -> None:
        self.model = load_model(config, checkpoint, device)
        self._setup(config, device, tasks, list(self.model.task_names))

    def _setup(
        self, config: RunConfig, device: str, tasks: Sequence[str] | None, enabled: list[str]
    ) -> None:
        """Tasks to predict, preprocessing and an empty inference state (shared by backends)."""
        self.config = config
        self.device = device
        if tasks:
            unknown = [t for t in tasks if t not in enabled]
            if unknown:
                raise CheckpointError(
                    f"tasks {unknown} are not in this model; it has: {', '.join(enabled)}"
                )
        self.tasks = list(tasks) if tasks else enabled
        transforms = config.data.transforms if config.data is not None else TransformConfig()
        self.transform = build_transforms(transforms, train=False)
        self.size_divisor = config.data.size_divisor if config.data is not None else 32
        self.state = InferenceState()

    def sample(self, image: np.ndarray, name: str, index: int = 0, video: str | None = None):
        """A Sample of an RGB uint8 frame (H, W, 3), preprocessed for the model."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"frame {name}: expected an RGB uint8 (H, W, 3) array, got "
                             f"{image.dtype} {image.shape}")  # fmt: skip
        height, width = image.shape[:2]
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
        meta = SampleMeta(
            name=name,
            image_set="predict",
            orig_size=(height, width),
            image_size=(height, width),
            video=video,
            frame_index=index if video is not None else None,
        )
        return self.transform(Sample(image=tensor, meta=meta))

    @torch.no_grad()
    def predict(self, samples: Iterable[Sample]) -> list[FramePrediction]:
        """Predictions (original-image coordinates) for preprocessed samples run as one batch.

        The inference state (`self.state`: per-video memory of stateful tasks such as a tracker)
        carries over to the next call; frames of a video must come in order.
        """
        batch = collate(list(samples), self.size_divisor).to(self.device)
        predictions, self.state = self.run(batch)
        return predictions

    def run(self, batch: Batch) -> tuple[list[FramePrediction], InferenceState]:
        """The network and the runtime after it on a collated batch (the PyTorch backend)."""
        return self.model.predict_with_state(batch, self.state, self.tasks)

    @property
    def predicts_flow(self) -> bool:
        """Whether flow is among the tasks (it needs a pair of frames: see `flow`)."""
        return "flow" in self.tasks

    @torch.no_grad()
    def flow(self, key: Sample, following: Sample) -> torch.Tensor | None:
        """Forward flow [2, H, W] from preprocessed frame `key` to `following` (the next frame of
        its video), in `key`'s original pixels; None without a flow task. The pair runs alone,
        so the trackers' state is not touched."""
        if not self.predicts_flow:
            return None
        pair = replace(key, references=[following])
        batch = collate([pair], self.size_divisor).to(self.device)
        return self.model.predict(batch, ["flow"])[0].flow

    def reset(self) -> None:
        """Forget every video's inference state."""
        self.state = InferenceState()

    def __call__(
        self, image: np.ndarray, name: str, index: int = 0, video: str | None = None
    ) -> FramePrediction:
        """Predict one RGB frame."""
        return self.predict([self.sample(image, name, index, video)])[0]
