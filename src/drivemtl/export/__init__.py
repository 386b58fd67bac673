"""Export of a trained multi-task network to ONNX, and the small runtime that runs it.

`graphs`: the traceable parts of the network (the whole network up to every task's raw outputs,
plus one graph per RoI head with the boxes as an input); `runtime`: the data-dependent steps
between and after them (proposals, NMS, RoI selection, each task's post-processing), shared with
the PyTorch path; `card`: the model card next to the exported files; `exporter`: the
`drivemtl export --format onnx` entry point.
"""

from __future__ import annotations

from drivemtl.export.errors import ExportError

__all__ = ["ExportError"]
