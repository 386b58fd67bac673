"""Model weights as safetensors (atomic writes), loading with a report, and the decoder merge.

Lightning's own `.ckpt` files carry the optimiser / scheduler / loop state for resuming; the
`.safetensors` files written here carry the weights that later stages, evaluation and export use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from drivemtl.errors import DriveMTLError
from drivemtl.models import weights as weights_io


class CheckpointError(DriveMTLError):
    """A weights file is missing, unreadable or does not fit the model."""


def save_weights(
    state: Mapping[str, Tensor] | nn.Module,
    path: str | Path,
    metadata: Mapping[str, object] | None = None,
) -> Path:
    """Write a state dict (or a module's) as safetensors plus its JSON metadata, atomically."""
    target, _ = weights_io.save_weights(state, path, dict(metadata or {}))
    return target


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict (.safetensors, or .pth / .pt with weights_only=True), with an error
    naming the file when it cannot be read."""
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"weights file not found: {source}")
    try:
        return weights_io.read_state_dict(source)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{source}: not a readable weights file ({exc})") from None


def read_metadata(path: str | Path) -> dict[str, object]:
    """The metadata written with a weights file (its JSON sidecar, else the safetensors header)."""
    try:
        return weights_io.load_metadata(path)
    except FileNotFoundError:
        pass
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


@dataclass
class LoadReport:
    """What `load_into` did: keys loaded, keys the model has but the file lacks, and the reverse."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def load_into(model: nn.Module, state: Mapping[str, Tensor], source: str = "weights") -> LoadReport:
    """Copy matching tensors of `state` into `model` (missing keys keep their fresh values).

    Keys present in both must have the same shape (else CheckpointError naming key and shapes);
    missing keys are normal when a stage adds freshly initialised heads.
    """
    own = model.state_dict()
    report = LoadReport()
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
            continue
        if tuple(own[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{source}: '{key}' has shape {tuple(value.shape)}, the model expects "
                f"{tuple(own[key].shape)} (was it written for another model config?)"
            )
        report.loaded.append(key)
    report.missing = [k for k in own if k not in state]
    if not report.loaded:
        raise CheckpointError(f"{source}: no tensor matches the model (wrong checkpoint?)")
    with torch.no_grad():
        for key in report.loaded:
            own[key].copy_(state[key])
    return report


def merge_decoders(
    base: Mapping[str, Tensor],
    finetuned: Mapping[str, Mapping[str, Tensor]],
    prefixes: Mapping[str, list[str]],
) -> dict[str, Tensor]:
    """One state dict: `base` with each task's decoder tensors taken from its fine-tuned copy.

    finetuned[task] is the full state dict after fine-tuning `task`'s decoder; prefixes[task] lists
    the name prefixes that decoder owns. Prefixes of two tasks must not overlap (the merge would
    be ambiguous), and every prefix must own at least one tensor.
    """
    owner: dict[str, str] = {}
    for task in finetuned:
        if task not in prefixes:
            raise CheckpointError(f"merge: no decoder prefixes known for task '{task}'")
        for prefix in prefixes[task]:
            keys = [k for k in base if k.startswith(prefix)]
            if not keys:
                raise CheckpointError(
                    f"merge: decoder prefix '{prefix}' of '{task}' owns no tensor"
                )
            for key in keys:
                if key in owner and owner[key] != task:
                    raise CheckpointError(
                        f"merge: '{key}' belongs to the decoders of both '{owner[key]}' and "
                        f"'{task}'; fine-tune them in one stage or give them disjoint prefixes"
                    )
                owner[key] = task
    merged = {k: v.clone() for k, v in base.items()}
    for key, task in owner.items():
        if key not in finetuned[task]:
            raise CheckpointError(f"merge: fine-tuned weights of '{task}' lack '{key}'")
        merged[key] = finetuned[task][key].clone()
    return merged


def write_json(data: object, path: str | Path) -> Path:
    """Write JSON atomically (tmp + rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")
    tmp.replace(target)
    return target
