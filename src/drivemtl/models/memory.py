"""Peak activation memory of a forward pass, from the live tensor storage its ops allocate.

`MemoryTracker` is a TorchDispatchMode: every tensor an op returns whose storage is new is
counted (its storage's bytes) until that storage is freed (a weakref finalizer on the storage),
so `peak` is the largest sum of simultaneously live activation bytes. Views and in-place results
share a storage and are not counted twice; parameters, buffers and tensors made before the mode
are not counted unless given to `track`. Because only shapes matter, the pass can run on the
`meta` device (`meta_call`): the exact peak at any input size without computing anything.

Limits: the count is of tensor storage at the dispatcher, so it leaves out the scratch memory of
kernels (cuDNN / oneDNN workspaces), the caching allocator's rounding and fragmentation, and
storages an op resizes after it returned them. A model with data-dependent steps (NMS,
`nonzero`, `.item()`) cannot run on `meta`; `drivemtl.models.summary.model_memory` then runs it
for real on its own device.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

META_ERRORS = (NotImplementedError, RuntimeError)  # what a data-dependent op raises on `meta`


class MemoryTracker(TorchDispatchMode):
    """Live bytes of the storages that ops return, their overall peak and the peak per label.

    `enter(label)` starts a period of `label` (a stage); until the next `enter`, allocations
    count towards that label's `label_peak` (everything live) and `label_own` (above what was
    live when the period began).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self.label: str | None = None
        self.label_peak: dict[str, int] = {}
        self.label_own: dict[str, int] = {}
        self._base = 0

    def enter(self, label: str) -> None:
        """Count the following allocations towards `label`."""
        if label == self.label:
            return
        self.label, self._base = label, self.current
        self.label_peak[label] = max(self.label_peak.get(label, 0), self.current)
        self.label_own.setdefault(label, 0)

    def track(self, tensor: Tensor) -> None:
        """Count `tensor`'s storage as live until it is freed (once per storage)."""
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.live:
            return
        size = int(storage.nbytes())
        self.live[key] = size
        self.current += size
        weakref.finalize(storage, self._free, key)
        self.peak = max(self.peak, self.current)
        if self.label is not None:
            self.label_peak[self.label] = max(self.label_peak[self.label], self.current)
            self.label_own[self.label] = max(self.label_own[self.label], self.current - self._base)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, Tensor):
                self.track(value)
        return out


@contextmanager
def labelled_modules(modules: Mapping[nn.Module, str], tracker: MemoryTracker) -> Iterator[None]:
    """While inside, a module of `modules` starting its forward makes its label current."""
    handles = [
        module.register_forward_pre_hook(lambda *_, label=label: tracker.enter(label))
        for module, label in modules.items()
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def meta_twins(model: nn.Module) -> dict[str, Tensor]:
    """A `meta` tensor of the same shape, dtype and `requires_grad` for every parameter and
    buffer of `model`."""
    return {
        name: torch.empty_like(t, device="meta").requires_grad_(t.requires_grad)
        for name, t in [*model.named_parameters(), *model.named_buffers()]
    }


def meta_call(model: nn.Module, twins: dict[str, Tensor], *args: Any, **kwargs: Any) -> Any:
    """`model(*args, **kwargs)` with the parameters and buffers named in `twins` swapped for
    them during the call (`meta_twins`: all of them, on `meta`; the inputs must then be on
    `meta` too). The model itself is left untouched."""
    return torch.func.functional_call(model, twins, args, kwargs, strict=False)


@dataclass(frozen=True)
class StageMemory:
    """Peak activation bytes while one stage ran: everything live, and its own part.

    `peak_bytes` counts every live activation (earlier stages' outputs included: what the device
    must hold); `own_bytes` only what was allocated above the level at the stage's start.
    """

    name: str
    peak_bytes: int
    own_bytes: int


@dataclass(frozen=True)
class MemoryProfile:
    """Peak activation memory of one inference forward pass at `input_size` (H, W).

    `method`: "meta" (counted without compute) or the device the pass really ran on;
    `note`: why it could not run on `meta`, when it did not; `training`: the pass recorded
    autograd (train mode, what a backward pass needs kept live), else inference under no_grad.
    """

    input_size: tuple[int, int]
    batch_size: int
    peak_bytes: int
    input_bytes: int
    stages: list[StageMemory]
    method: str
    note: str = ""
    training: bool = False

    def stage(self, name: str) -> StageMemory:
        """The entry of stage `name` (KeyError naming the known stages)."""
        for entry in self.stages:
            if entry.name == name:
                return entry
        raise KeyError(f"no stage {name!r}; stages: {[s.name for s in self.stages]}")


def measure(
    run: Callable[[], Any],
    inputs: tuple[Tensor, ...] = (),
    labels: Mapping[nn.Module, str] | None = None,
    grad: bool = False,
) -> MemoryTracker:
    """Run `run()` under a MemoryTracker (the `inputs` counted as live from the start).

    With `grad`, autograd records the pass, so what it saves for a backward pass stays live
    and is counted (a training forward); without, the pass runs under no_grad.
    """
    tracker = MemoryTracker()
    with torch.set_grad_enabled(grad), labelled_modules(labels or {}, tracker), tracker:
        for tensor in inputs:
            tracker.track(tensor)
        run()
    return tracker


def stage_labels(model: nn.Module, paths: list[str]) -> dict[nn.Module, str]:
    """Every sub-module of the stages at `paths` -> the path of the stage it belongs to."""
    labels: dict[nn.Module, str] = {}
    for name, module in model.named_modules():
        owners = [p for p in paths if name == p or name.startswith(p + ".")]
        if owners:
            labels[module] = max(owners, key=len)
    return labels


__all__ = [
    "MemoryProfile",
    "MemoryTracker",
    "StageMemory",
    "labelled_modules",
    "measure",
    "meta_call",
    "meta_twins",
    "stage_labels",
]
