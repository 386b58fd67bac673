"""The runtime of an exported network: graphs in, typed predictions out.

The network graph gives every task's raw outputs; the runtime then runs the data-dependent steps
with the same functions the PyTorch forward uses: the RPN's proposals (`RPN.finish`), the box
head's RoI graph on them, detections (`TwoStageDetector.detections`: threshold, NMS, top-k), the
mask / keypoint RoI graphs on the detections their head keeps (`keep_class`), and finally
`finish_predictions` (each task's `postprocess` and `update_state`). A `Graphs` backend
evaluates the graphs: `TorchGraphs` in PyTorch, `OnnxGraphs` with onnxruntime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from drivemtl.export.errors import ExportError
from drivemtl.export.graphs import ExportPlan, NetworkGraph, RoIGraph, build_graphs, level_name
from drivemtl.models.config import ModelConfig
from drivemtl.models.heads.mask_head import RoIHeadOutputs, select_rois
from drivemtl.models.multitask import MultiTaskNet, build_model, finish_predictions
from drivemtl.ops.roi_align import rois_to_tensor
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.state import InferenceState


class Graphs(Protocol):
    """Evaluates the exported graphs (by their graph names)."""

    def network(self, images: Tensor) -> dict[str, Tensor]:
        """Outputs of the network graph by name."""
        ...

    def roi(self, head: str, maps: Mapping[int, Tensor], rois: Tensor) -> dict[str, Tensor]:
        """Outputs of head `head`'s RoI graph for levels `maps` (stride -> map) and rois [R, 5]."""
        ...


class TorchGraphs:
    """The graphs evaluated by their PyTorch modules (the reference the ONNX graphs match)."""

    def __init__(self, network: NetworkGraph, rois: Mapping[str, RoIGraph]) -> None:
        self._network = network
        self._rois = dict(rois)

    @torch.no_grad()
    def network(self, images: Tensor) -> dict[str, Tensor]:
        """Outputs of the network graph by name."""
        return self._network.named_outputs(images)

    @torch.no_grad()
    def roi(self, head: str, maps: Mapping[int, Tensor], rois: Tensor) -> dict[str, Tensor]:
        """Outputs of `head`'s RoI graph."""
        return self._rois[head].named_outputs(maps, rois)


class OnnxGraphs:
    """The graphs of an export folder run by onnxruntime (CPU provider)."""

    def __init__(self, folder: Path, files: Mapping[str, str], threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3
        self.sessions = {}
        for graph, name in files.items():
            path = Path(folder) / name
            if not path.is_file():
                raise ExportError(f"{path}: graph {graph!r} of the model card does not exist")
            self.sessions[graph] = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, Tensor]:
        session = self.sessions[graph]
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, feeds)
        return {n: torch.from_numpy(np.asarray(v)) for n, v in zip(names, values, strict=True)}

    def network(self, images: Tensor) -> dict[str, Tensor]:
        """Outputs of the network graph by name."""
        return self._run("network", {"images": images.detach().float().cpu().numpy()})

    def roi(self, head: str, maps: Mapping[int, Tensor], rois: Tensor) -> dict[str, Tensor]:
        """Outputs of `head`'s RoI graph."""
        session = self.sessions[head]
        feeds = {}
        for node in session.get_inputs():
            if node.name == "rois":
                feeds["rois"] = rois.detach().float().cpu().numpy()
            else:
                stride = next(s for s in maps if level_name(s) == node.name)
                feeds[node.name] = maps[stride].detach().float().cpu().numpy()
        return self._run(head, feeds)


def runtime_model(config: ModelConfig) -> MultiTaskNet:
    """The config's network without its weights: the runtime uses only its parameter-free parts
    (task plug-ins, anchors, proposal / detection settings, RoI selection)."""
    backbone = config.backbone
    if getattr(backbone, "weights", None) is not None:
        config = config.model_copy(
            update={"backbone": backbone.model_copy(update={"weights": None})}
        )
    return build_model(config).eval()


class ExportedRuntime:
    """Predictions of an exported network: `graphs` + the data-dependent steps (module doc)."""

    def __init__(self, model: MultiTaskNet, graphs: Graphs, plan: ExportPlan | None = None) -> None:
        self.model = model
        self.graphs = graphs
        self.plan = plan if plan is not None else build_graphs(model)[0]

    @property
    def task_names(self) -> list[str]:
        """The enabled tasks."""
        return self.model.task_names

    def raw_outputs(self, batch: Batch) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """(head name -> raw outputs as the PyTorch heads return them, every graph output)."""
        raw = self.graphs.network(batch.images)
        outputs: dict[str, Any] = {}
        for name in self.plan.tasks:
            if name in self.plan.roi_graphs():
                continue
            if name in raw:
                outputs[name] = raw[name]
            else:
                prefix = f"{name}."
                outputs[name] = {
                    k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix)
                }
        if self.plan.detector is None:
            return outputs, raw
        maps = {s: raw[level_name(s)] for s in self.plan.levels}
        name = self.plan.detector
        detector = self.model.heads[name]
        levels = [level_name(s).split(".")[1] for s in detector.rpn_strides]
        rpn_out = detector.rpn.finish(
            [raw[f"{name}.rpn.objectness.{lv}"] for lv in levels],
            [raw[f"{name}.rpn.deltas.{lv}"] for lv in levels],
            batch.image_sizes,
            training=False,
        )
        box = self._roi(name, maps, rpn_out.proposals, raw)
        outputs[name], objects = detector.detections(
            rpn_out, box["class_logits"], box["box_deltas"], batch.image_sizes
        )
        for head_name in self.plan.roi_heads:
            head = self.model.heads[head_name]
            boxes, classes, _, scores = select_rois(objects, None, head.keep_class, bool)
            logits = self._roi(head_name, maps, boxes, raw)["logits"]
            outputs[head_name] = RoIHeadOutputs(logits, boxes, classes, None, scores)
        return outputs, raw

    def _roi(
        self, head: str, maps: Mapping[int, Tensor], boxes: Sequence[Tensor], raw: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        rois = rois_to_tensor(boxes, next(iter(maps.values())).new_empty(0))
        out = self.graphs.roi(head, maps, rois)
        raw.update({f"{head}.roi.{k}": v for k, v in out.items()})
        return out

    @torch.no_grad()
    def predict(
        self, batch: Batch, state: InferenceState | None, tasks: Sequence[str] | None = None
    ) -> tuple[list[FramePrediction], InferenceState]:
        """Predictions for `tasks` (default: all) and the inference state for the next frames."""
        requested = list(tasks) if tasks else self.task_names
        outputs, _ = self.raw_outputs(batch)
        return finish_predictions(self.model.tasks, outputs, batch, state, requested)
