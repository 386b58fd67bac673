"""Config building blocks shared by every layer: the strict section base and `type` + options.

Every section forbids unknown keys. A pluggable part is configured as a mapping `{type: NAME,
...options}`; `plugin(REGISTRY)` is the field type that looks NAME up in the registry and validates
the options against the model registered with it, so each plug-in brings its own validated options
and the config layer needs to know none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, SerializeAsAny

from drivemtl.registry import Registry


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PluginOptions(StrictModel):
    """Options of a pluggable part: its registered `type` plus whatever the part declares."""

    type: str


@dataclass(frozen=True)
class PluginField:
    """Marker carried by a `plugin(...)` field: which registry resolves `type`, and its default."""

    registry: Registry[Any]
    default: str | None = None

    def options_class(self, name: str | None) -> type[PluginOptions]:
        """The options model of entry `name` (the field default when None); KeyError if unknown."""
        name = name if name is not None else self.default
        if name is None:
            raise ValueError(f"a {self.registry.kind} needs a `type`")
        return self.registry.options(name) or PluginOptions

    def validate(self, value: Any) -> Any:
        """Options instance of the entry named by `value['type']` (a mapping or an instance)."""
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, dict):
            raise ValueError(
                f"expected a mapping with a `type` key (a {self.registry.kind}), got "
                f"{type(value).__name__}"
            )
        name = value.get("type", self.default)
        try:
            options = self.options_class(name)
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
        return options.model_validate({**value, "type": name})


def plugin(registry: Registry[Any], default: str | None = None) -> Any:
    """Field type of `{type: NAME, ...}` options of a part from `registry` (see module doc)."""
    marker = PluginField(registry, default)
    return Annotated[SerializeAsAny[PluginOptions], BeforeValidator(marker.validate), marker]


def plugin_default(registry: Registry[Any], name: str, **options: Any) -> Any:
    """A default factory building the options of `name` (for `Field(default_factory=...)`)."""
    marker = PluginField(registry, name)
    return lambda: marker.validate({"type": name, **options})


def plugin_marker(annotation: Any) -> PluginField | None:
    """The PluginField of a `plugin(...)` annotation, or None."""
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, PluginField):
            return meta
    return None


def build_plugin(registry: Registry[Any], spec: Any, *args: Any, **kwargs: Any) -> Any:
    """Validate `spec` ({type: NAME, ...} or an options instance) and call the entry with it."""
    options = PluginField(registry).validate(spec)
    return registry.get(options.type)(options, *args, **kwargs)
