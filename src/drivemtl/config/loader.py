"""Load YAML configs: `_base_` inheritance, typed `--set a.b=value` overrides, precise errors.

Every value remembers where it came from (a file or a `--set` flag) so that a validation error can
name the file, the dotted key, the value given and what the schema expected.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from drivemtl.config.base import plugin_marker
from drivemtl.errors import DriveMTLError

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"

M = TypeVar("M", bound=BaseModel)


class ConfigError(DriveMTLError):
    """A config problem, worded to name the source (file or flag), the dotted key and the fix."""


class _Tree:
    """A merged config mapping plus the source of every dotted key."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.sources: dict[str, str] = {}


def _read_yaml(path: Path, referenced_from: str | None) -> dict[str, Any]:
    if not path.is_file():
        where = f" (listed in {BASE_KEY} of {referenced_from})" if referenced_from else ""
        raise ConfigError(f"config file not found: {path}{where}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{path}: expected a mapping at the top level, got {type(loaded).__name__}"
        )
    return loaded


def _record_sources(value: Any, prefix: str, source: str, sources: dict[str, str]) -> None:
    sources[prefix] = source
    if isinstance(value, dict):
        for key, sub in value.items():
            _record_sources(sub, f"{prefix}.{key}", source, sources)


def _merge(dst: dict[str, Any], src: Mapping[str, Any], prefix: str, source: str, tree: _Tree):
    """Merge `src` into `dst`: mappings merge key by key, everything else replaces."""
    for key, value in src.items():
        if not isinstance(key, str):
            raise ConfigError(
                f"{source}: key {key!r} under '{prefix or '<root>'}' must be a string"
            )
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            value = dict(value)
            replace = bool(value.pop(DELETE_KEY, False))
            if replace or not isinstance(dst.get(key), dict):
                dst[key] = {}
                _clear_sources(tree.sources, dotted)
            tree.sources[dotted] = source
            _merge(dst[key], value, dotted, source, tree)
        else:
            dst[key] = value
            _clear_sources(tree.sources, dotted)
            _record_sources(value, dotted, source, tree.sources)


def _clear_sources(sources: dict[str, str], dotted: str) -> None:
    for key in [k for k in sources if k == dotted or k.startswith(dotted + ".")]:
        del sources[key]


def _load_into(tree: _Tree, path: Path, stack: tuple[Path, ...], referenced_from: str | None):
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"{BASE_KEY} cycle: {chain}")
    raw = _read_yaml(path, referenced_from)
    bases = raw.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a file name or a list of file names")
    for base in bases:
        _load_into(tree, path.parent / base, (*stack, path), str(path))
    _merge(tree.data, raw, "", str(path), tree)


def load_tree(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a YAML file with its `_base_` chain merged in; return (data, source of each key)."""
    tree = _Tree()
    _load_into(tree, Path(path), (), None)
    return tree.data, tree.sources


def _unwrap_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap_optional(args[0])
    if origin is typing.Annotated and plugin_marker(annotation) is None:
        return _unwrap_optional(typing.get_args(annotation)[0])
    return annotation


def _child(node: Any, part: str) -> Any:
    """The config value under `part` of `node` (None when absent)."""
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    return None


def _field_annotation(info: Any) -> Any:
    """A field's annotation, re-attaching a `plugin(...)` marker that pydantic keeps apart."""
    marker = next((m for m in info.metadata if plugin_marker(typing.Annotated[Any, m])), None)
    if marker is None:
        return info.annotation
    return typing.Annotated[info.annotation, marker]


def _resolve_plugin(annotation: Any, node: Any, here: str, flag: str) -> Any:
    """A `plugin(...)` annotation resolved to the options model its `type` names."""
    marker = plugin_marker(annotation)
    if marker is None:
        return annotation
    name = node.get("type") if isinstance(node, dict) else None
    try:
        return marker.options_class(name)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{flag}: '{here}': {exc.args[0]}") from None


def _annotation_at(schema: type[BaseModel], parts: list[str], flag: str, data: Any = None) -> Any:
    """The schema's type annotation at a dotted path, or a ConfigError for an unknown key.

    `data` (the merged config tree) resolves `type` + options sections to their plug-in's model.
    """
    annotation: Any = schema
    node = data
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        annotation = _resolve_plugin(_unwrap_optional(annotation), node, here, flag)
        annotation = _unwrap_optional(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = annotation.model_fields
            if part not in fields:
                known = ", ".join(sorted(fields))
                raise ConfigError(f"{flag}: unknown key '{here}'; expected one of: {known}")
            annotation = _field_annotation(fields[part])
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        elif typing.get_origin(annotation) is list and part.isdigit():
            annotation = typing.get_args(annotation)[0]
        elif annotation is Any:
            return Any
        else:
            parent = ".".join(parts[:depth])
            name = getattr(annotation, "__name__", str(annotation))
            raise ConfigError(f"{flag}: '{parent}' is a {name} value, it has no key '{part}'")
        node = _child(node, part)
    if plugin_marker(_unwrap_optional(annotation)) is None:
        return annotation
    return _resolve_plugin(_unwrap_optional(annotation), node, ".".join(parts), flag)


def _is_text(annotation: Any) -> bool:
    if annotation is str:
        return True
    if typing.get_origin(annotation) is typing.Literal:
        return all(isinstance(a, str) for a in typing.get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, Path)


def parse_override(text: str, schema: type[BaseModel], data: Any = None) -> tuple[list[str], Any]:
    """Parse `a.b=value` into (key parts, value) typed by the schema at that key.

    `data`, the config tree the override applies to, types keys inside `type` + options sections.

    Text fields keep the raw string (so `--set name=007` stays "007"); other fields are parsed as
    YAML (numbers, booleans, null, lists, mappings) and then validated with the rest of the config.
    """
    flag = f"--set {text}"
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not p for p in key.split(".")):
        raise ConfigError(
            f"{flag}: expected KEY=VALUE with a dotted key, e.g. model.backbone.width=32"
        )
    parts = key.split(".")
    annotation = _annotation_at(schema, parts, flag, data)
    optional = _unwrap_optional(annotation) is not annotation and type(None) in typing.get_args(
        annotation
    )
    if optional and raw.strip() in ("null", "~", ""):
        return parts, None
    if _is_text(_unwrap_optional(annotation)):
        return parts, raw
    try:
        return parts, yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{flag}: value is not valid YAML: {exc}") from None


def _set_in(data: dict[str, Any], parts: list[str], value: Any, flag: str) -> None:
    """Set `value` at the dotted path; integer parts index into lists (`stages.0.steps`)."""
    node: Any = data
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            index = int(part)
            if index >= len(node):
                raise ConfigError(
                    f"{flag}: '{here}' is past the end of a list of {len(node)} entries"
                )
            if last:
                node[index] = value
            else:
                node = node[index]
            continue
        if last:
            node[part] = value
            break
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict | list):
            raise ConfigError(f"{flag}: '{here}' is a {type(child).__name__}, not a mapping")
        node = child


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def _format_error(err: Mapping[str, Any], sources: Mapping[str, str], root: str) -> str:
    loc = [str(p) for p in err["loc"]]
    dotted = ".".join(loc) or "<root>"
    source = root
    for depth in range(len(loc), 0, -1):
        prefix = ".".join(loc[:depth])
        if prefix in sources:
            source = sources[prefix]
            break
    # An error on a whole mapping (e.g. an unknown `type`) caused by a flag inside it names it.
    flags = [v for k, v in sources.items() if k.startswith(f"{dotted}.") and v.startswith("--set")]
    if flags:
        source = flags[-1]
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{dotted}' (given {_describe(err['input'])})"
    if kind == "missing":
        return f"{source}: missing required key '{dotted}'"
    msg = str(err["msg"])
    for prefix in ("Input should be ", "Value should be "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return f"{source}: key '{dotted}': got {_describe(err['input'])}; expected {msg}"


def _known_keys_hint(err: Mapping[str, Any], schema: type[BaseModel], data: Any = None) -> str:
    if err["type"] != "extra_forbidden":
        return ""
    try:
        parent = _annotation_at(schema, [str(p) for p in err["loc"][:-1]], "", data)
    except ConfigError:
        return ""
    if isinstance(parent, type) and issubclass(parent, BaseModel):
        return "; expected one of: " + ", ".join(sorted(parent.model_fields))
    return ""


def validate_tree(
    data: dict[str, Any], sources: Mapping[str, str], schema: type[M], root: str
) -> M:
    """Validate a merged tree against the schema, raising one ConfigError listing every problem."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        lines = [
            _format_error(err, sources, root) + _known_keys_hint(err, schema, data)
            for err in exc.errors()
        ]
        if len(lines) == 1:  # one problem, one line
            raise ConfigError(f"invalid config: {lines[0]}") from None
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None


def load_config(path: str | Path, schema: type[M], overrides: Iterable[str] = ()) -> M:
    """Load a YAML config with its `_base_` files and `--set` overrides, validated by `schema`.

    A whole run config is `drivemtl.engine.run_config.load_run_config`.
    """
    data, sources = load_tree(path)
    for text in overrides:
        parts, value = parse_override(text, schema, data)
        _set_in(data, parts, value, f"--set {text}")
        dotted = ".".join(parts)
        _clear_sources(sources, dotted)
        _record_sources(value, dotted, f"--set {text}", sources)
    return validate_tree(data, sources, schema, str(Path(path)))


def dump_config(config: BaseModel, path: str | Path | None = None) -> str:
    """The fully resolved config as YAML; written atomically to `path` when given."""
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    if path is not None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
    return text
