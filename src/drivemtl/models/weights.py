"""Load and save model weights safely.

Loading accepts ``.pth`` / ``.pt`` (read with ``torch.load(weights_only=True)``: plain tensors only,
never arbitrary pickled objects) and ``.safetensors``; key prefixes can be renamed or dropped, and
every missing, unexpected or shape-mismatched key is reported in one readable list. Saving always
writes ``.safetensors`` plus a JSON sidecar of metadata, atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from drivemtl.errors import DriveMTLError

TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
# Wrappers that training frameworks put around the state dict (Lightning, detectron-style).
_WRAPPER_KEYS = ("state_dict", "model")


@dataclass
class LoadReport:
    """Outcome of ``load_weights``: which keys loaded and which did not, and why."""

    path: Path
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every model key was loaded and every checkpoint key was used."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"weights {self.path}: {len(self.loaded)} tensors loaded"]
        for key, ckpt_shape, model_shape in self.mismatched:
            lines.append(f"  shape mismatch: {key}: checkpoint {ckpt_shape} vs model {model_shape}")
        lines += [f"  missing in checkpoint: {key}" for key in self.missing]
        lines += [f"  unexpected in checkpoint: {key}" for key in self.unexpected]
        if self.dropped:
            lines.append(f"  dropped by prefix_map: {len(self.dropped)} keys")
        return "\n".join(lines)


class WeightsError(DriveMTLError):
    """A weights file that cannot be read as a dict of tensors; the message names the file."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def is_torchscript_archive(path: Path) -> bool:
    """Whether `path` is a TorchScript zip archive (``torch.jit.save``: code + constants)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _torchscript_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        raise WeightsError(
            f"{path}: a TorchScript archive that does not load: {_first_line(error)}"
        ) from None
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def read_state_dict(path: str | Path, torchscript: bool = False) -> dict[str, Tensor]:
    """Read a tensor dict from ``.safetensors`` or a torch file (``weights_only=True``).

    With `torchscript`, a TorchScript archive (e.g. OpenAI's released CLIP ``.pt`` files) is read
    too, through ``torch.jit.load`` (its code is loaded, never run), for its state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except Exception as error:  # SafetensorError, OSError on truncated / foreign files
            raise WeightsError(
                f"{path}: not a readable safetensors file ({_first_line(error)})"
            ) from None
    if path.suffix not in TORCH_SUFFIXES:
        raise WeightsError(
            f"{path}: unknown weights format {path.suffix!r}; expected .safetensors or {TORCH_SUFFIXES}"
        )
    if torchscript and is_torchscript_archive(path):
        return _torchscript_state_dict(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(
            f"{path}: not loadable with torch.load(weights_only=True) "
            f"(only tensors and plain containers are accepted): {_first_line(error)}"
        ) from None
    for key in _WRAPPER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(f"{path}: entries that are not tensors: {bad[:5]}")
    return dict(obj)


def _rename(key: str, rules: list[tuple[str, str | None]]) -> str | None:
    for old, new in rules:
        if key.startswith(old):
            return None if new is None else new + key[len(old) :]
    return key


def rename_keys(
    state: Mapping[str, Tensor], prefix_map: Mapping[str, str | None] | None
) -> tuple[dict[str, Tensor], list[str]]:
    """Apply the longest matching ``old_prefix -> new_prefix`` rule to each key (None drops it).

    Returns the renamed dict and the list of dropped checkpoint keys.
    """
    rules = sorted((prefix_map or {}).items(), key=lambda item: len(item[0]), reverse=True)
    renamed: dict[str, Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        new_key = _rename(key, rules)
        if new_key is None:
            dropped.append(key)
            continue
        if new_key in renamed:
            raise ValueError(f"prefix_map maps two checkpoint keys onto {new_key!r}")
        renamed[new_key] = value
    return renamed, dropped


def fit_problems(own: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> list[str]:
    """Why `state` does not fit a model whose state dict is `own` exactly (empty: it fits).

    One short phrase per kind of problem: model tensors the file lacks (a missing
    `num_batches_tracked` is fine: older checkpoints lack it), tensors the model does not have,
    and shape mismatches, each with a count and a first example.
    """
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unknown = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} model tensors missing (e.g. {missing[0]})")
    if unknown:
        problems.append(f"{len(unknown)} unknown tensors (e.g. {unknown[0]})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {mismatched[0]})")
    return problems


def load_weights(
    module: nn.Module,
    path: str | Path,
    prefix_map: Mapping[str, str | None] | None = None,
    strict: bool = True,
) -> LoadReport:
    """Load ``path`` into ``module`` after renaming keys with ``prefix_map``.

    Keys under the module's ``checkpoint_ignore_prefixes`` attribute (if any) are dropped too.

    Tensors whose shapes disagree are skipped and reported. A missing ``num_batches_tracked`` is
    not an error (old torchvision checkpoints lack it). ``strict``: raise ``ValueError`` with the
    full report if anything is missing / unexpected / mismatched; otherwise warn and continue.
    """
    path = Path(path)
    state, dropped = rename_keys(read_state_dict(path), prefix_map)
    own = module.state_dict()
    # A module may declare checkpoint parts it never has (ResNet: the ImageNet classifier "fc.").
    ignored = tuple(getattr(module, "checkpoint_ignore_prefixes", ()))
    if ignored:
        for key in [k for k in state if k.startswith(ignored) and k not in own]:
            del state[key]
            dropped.append(key)
    mismatched = [
        (key, tuple(value.shape), tuple(own[key].shape))
        for key, value in state.items()
        if key in own and tuple(value.shape) != tuple(own[key].shape)
    ]
    for key, _, _ in mismatched:
        del state[key]
    result = module.load_state_dict(state, strict=False)
    skipped = {key for key, _, _ in mismatched}
    report = LoadReport(
        path=path,
        loaded=sorted(set(state) - set(result.unexpected_keys)),
        missing=[
            key
            for key in result.missing_keys
            if key not in skipped and not key.endswith("num_batches_tracked")
        ],
        unexpected=list(result.unexpected_keys),
        mismatched=mismatched,
        dropped=dropped,
    )
    if not report.ok:
        if strict:
            raise WeightsError(f"strict weight loading failed:\n{report}")
        warnings.warn(str(report), stacklevel=2)
    return report


def _umask() -> int:
    """The process's file-creation mask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(target: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then move the finished file onto ``target`` in one rename.

    The file gets the permissions of any file the user creates (0666 less the umask), not the
    0600 of the temporary file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def metadata_path(path: str | Path) -> Path:
    """The JSON sidecar next to a ``.safetensors`` file (``model.safetensors`` -> ``model.json``)."""
    return Path(path).with_suffix(".json")


def save_weights(
    module_or_state_dict: nn.Module | Mapping[str, Tensor],
    path: str | Path,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write tensors to ``path`` (``.safetensors``) and ``metadata`` (JSON-serialisable) beside it.

    Both files are written to a temporary name and renamed, so a crash never leaves a half file.
    Returns ``(weights_path, metadata_path)``.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_weights writes safetensors: {path} must end in .safetensors")
    if isinstance(module_or_state_dict, nn.Module):
        state = module_or_state_dict.state_dict()
    else:
        state = dict(module_or_state_dict)
    # safetensors rejects shared or non-contiguous storage: give every tensor its own copy.
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in state.items()}
    meta = dict(metadata or {})
    try:
        meta_text = json.dumps(meta, indent=2, sort_keys=True)
    except TypeError as error:
        raise ValueError(
            f"save_weights: metadata for {path} is not JSON-serialisable: {error}"
        ) from error
    sidecar = metadata_path(path)
    _atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"drivemtl": meta_text}))
    _atomic_write(sidecar, lambda tmp: tmp.write_text(meta_text + "\n"))
    return path, sidecar


def load_metadata(path: str | Path) -> dict[str, Any]:
    """Read the JSON sidecar written by ``save_weights`` for ``path``."""
    sidecar = metadata_path(path)
    if not sidecar.is_file():
        raise FileNotFoundError(f"metadata sidecar not found: {sidecar}")
    return json.loads(sidecar.read_text())
