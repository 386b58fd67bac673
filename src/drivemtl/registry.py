"""Name -> class registries for pluggable parts (backbones, necks, heads, tasks, samplers, ...).

An entry may carry the pydantic model of its options (`register(name, options=Options)`); config
sections written as `{type: NAME, ...options}` are validated against it (`drivemtl.config.base`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named mapping from string keys to classes or factories.

    Config files refer to parts by name; the registry turns the name into the object and, when the
    name is unknown, fails with a message that lists every name it knows.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._options: dict[str, type] = {}

    def register(self, name: str | None = None, options: type | None = None) -> Callable[[T], T]:
        """Decorator registering a class or function under `name` (default: its `__name__`).

        `options` is the pydantic model of the entry's config options (default: the entry's own
        `Options` attribute, if it has one).
        """

        def decorator(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError(f"cannot register an unnamed {self.kind}: pass a name")
            self.add(key, obj, options)
            return obj

        return decorator

    def add(self, name: str, obj: T, options: type | None = None) -> None:
        """Register `obj` under `name`; registering a taken name twice is an error."""
        if name in self._entries and self._entries[name] is not obj:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        options = options if options is not None else getattr(obj, "Options", None)
        if options is not None:
            self._options[name] = options

    def options(self, name: str) -> type | None:
        """The options model registered with `name` (None when the entry takes no options)."""
        self.get(name)
        return self._options.get(name)

    def get(self, name: str) -> T:
        """Return the entry called `name`, or raise a KeyError listing the known names."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none registered)"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def build(self, name: str, *args: object, **kwargs: object) -> object:
        """Look up `name` and call it with the given arguments."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def entries(self) -> dict[str, T]:
        """Name -> entry, in registration order (a copy)."""
        return dict(self._entries)

    def names(self) -> list[str]:
        """Sorted list of registered names."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
