"""`drivemtl predict --onnx`: the exported graphs run by onnxruntime behind the Predictor API.

Preprocessing, task selection and the inference state are the PyTorch predictor's; only the
network differs: the folder's graphs (onnxruntime, CPU provider) and the shared runtime of
`drivemtl.export.runtime` in place of `MultiTaskNet.predict_with_state`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from drivemtl.engine.run_config import RunConfig
from drivemtl.export.card import card_config, check_config, read_card
from drivemtl.export.runtime import ExportedRuntime, OnnxGraphs, runtime_model
from drivemtl.inference.predictor import Predictor
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.state import InferenceState


class OnnxPredictor(Predictor):
    """A Predictor over an ONNX export folder; `config`, when given, must be the exported one
    (checked against the folder's model card), else the card's config is used."""

    def __init__(
        self,
        folder: Path,
        config: RunConfig | None = None,
        tasks: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        card = read_card(folder)
        if config is None:
            config = card_config(card, folder)
        else:
            check_config(card, config, folder)
        files = {name: entry["file"] for name, entry in card["graphs"].items()}
        self.card = card
        self.runtime = ExportedRuntime(
            runtime_model(config.model), OnnxGraphs(folder, files, threads)
        )
        self._setup(config, "cpu", tasks, self.runtime.task_names)

    def run(self, batch: Batch) -> tuple[list[FramePrediction], InferenceState]:
        """The ONNX graphs and the shared runtime on a collated batch."""
        return self.runtime.predict(batch, self.state, self.tasks)
