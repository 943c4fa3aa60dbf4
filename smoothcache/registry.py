"""Adapter registry: loads plugins through pluggy and detects which adapter fits a model.

Built-in and third-party adapters arrive the same way, through the entry-point group
``smoothcache``. Setting ``SMOOTHCACHE_DISABLE_PLUGIN_AUTOLOAD=1`` skips every entry point that
does not belong to smoothcache itself. A plugin that fails to import or whose hook raises is
reported by name in a warning; the other adapters keep working.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from smoothcache import hookspecs
from smoothcache.adapter import Adapter
from smoothcache.errors import AdapterError

logger = logging.getLogger(__name__)

AUTOLOAD_ENV = "SMOOTHCACHE_DISABLE_PLUGIN_AUTOLOAD"
GUIDE = "docs/adapters.md"
_REQUIRED = ("name", "matches", "branches", "timestep_source", "root")


@dataclass(frozen=True)
class AdapterInfo:
    """An adapter and where it came from (``built-in``, a distribution, or ``runtime``)."""

    adapter: Adapter
    source: str


def _dist_label(ep: metadata.EntryPoint) -> tuple[str, bool]:
    """A printable origin for an entry point, and whether it is smoothcache's own."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown distribution", False
    name = dist.metadata["Name"] or "unknown"
    if name.lower().replace("_", "-") == "smoothcache":
        return "built-in", True
    return f"{name} {dist.version}", False


class Registry:
    """Holds the plugin manager and the adapters it yields; loads lazily on first use."""

    def __init__(self) -> None:
        self._pm: pluggy.PluginManager | None = None
        self._origins: dict[str, str] = {}
        self._infos: list[AdapterInfo] | None = None
        self._runtime: list[Adapter] = []
        self.failures: dict[str, str] = {}

    def _manager(self) -> pluggy.PluginManager:
        if self._pm is not None:
            return self._pm
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        autoload = os.environ.get(AUTOLOAD_ENV, "") in ("", "0")
        for ep in metadata.entry_points(group=hookspecs.PROJECT):
            origin, builtin = _dist_label(ep)
            if not (builtin or autoload) or pm.get_plugin(ep.name) is not None:
                continue
            try:
                pm.register(ep.load(), name=ep.name)
            except Exception as exc:  # a broken plugin must not take the others down
                self._fail(ep.name, origin, exc)
                continue
            self._origins[ep.name] = origin
        self._pm = pm
        return pm

    def _fail(self, plugin: str, origin: str, exc: BaseException) -> None:
        message = f"smoothcache plugin {plugin!r} ({origin}) failed and was skipped: {exc!r}"
        self.failures[plugin] = message
        warnings.warn(message, RuntimeWarning, stacklevel=3)

    def infos(self) -> list[AdapterInfo]:
        """Every adapter with its origin, plugins first (in load order), then runtime ones."""
        if self._infos is None:
            infos: list[AdapterInfo] = []
            seen: set[str] = set()
            for impl in reversed(self._manager().hook.smoothcache_adapters.get_hookimpls()):
                origin = self._origins.get(impl.plugin_name, "runtime plugin")
                try:
                    provided = list(impl.function())
                    for adapter in provided:
                        _check_adapter(adapter)
                except Exception as exc:
                    self._fail(impl.plugin_name, origin, exc)
                    continue
                for adapter in provided:
                    if adapter.name in seen:
                        self._fail(
                            impl.plugin_name,
                            origin,
                            AdapterError(f"adapter name {adapter.name!r} is already taken"),
                        )
                        continue
                    seen.add(adapter.name)
                    infos.append(AdapterInfo(adapter, origin))
            self._infos = infos
        return self._infos + [AdapterInfo(a, "runtime") for a in self._runtime]

    def adapters(self) -> list[Adapter]:
        """Every known adapter."""
        return [info.adapter for info in self.infos()]

    def register(self, adapter: Adapter) -> None:
        """Add an adapter at run time (e.g. one defined in a notebook)."""
        _check_adapter(adapter)
        if adapter.name in {a.name for a in self.adapters()}:
            raise AdapterError(
                f"an adapter named {adapter.name!r} is already registered; give yours another name"
            )
        self._runtime.append(adapter)

    def get(self, name: str) -> Adapter:
        """The adapter called ``name``."""
        for adapter in self.adapters():
            if adapter.name == name:
                return adapter
        raise AdapterError(f"no adapter is named {name!r}; known adapters: {self._names()}")

    def _names(self) -> str:
        return ", ".join(a.name for a in self.adapters()) or "(none)"

    def detect(self, obj: Any) -> Adapter:
        """The adapter whose ``matches`` accepts ``obj`` (unwrapped by the adapter's ``root``).

        When several match, the highest ``priority`` wins; a tie is an error asking for
        ``adapter=``.
        """
        found: list[Adapter] = []
        for adapter in self.adapters():
            try:
                root = adapter.root(obj)
                if root is not None and adapter.matches(root):
                    found.append(adapter)
            except Exception as exc:
                warnings.warn(
                    f"adapter {adapter.name!r} raised while checking a {type(obj).__name__}: "
                    f"{exc!r}; it was skipped",
                    RuntimeWarning,
                    stacklevel=3,
                )
        if not found:
            raise AdapterError(
                f"no adapter matches a {type(obj).__module__}.{type(obj).__qualname__}. Known "
                f"adapters: {self._names()}. Pass adapter='name' if one fits, or write an adapter "
                f"for this architecture and add it with smoothcache.register(...) or a plugin "
                f"(see {GUIDE})"
            )
        best = max(a.priority for a in found)
        top = [a for a in found if a.priority == best]
        if len(top) > 1:
            names = ", ".join(a.name for a in top)
            raise AdapterError(
                f"several adapters match a {type(obj).__qualname__} with equal priority: {names}; "
                "choose one with adapter='name'"
            )
        return top[0]


def _check_adapter(adapter: Any) -> None:
    missing = [attr for attr in _REQUIRED if not hasattr(adapter, attr)]
    if missing or not isinstance(getattr(adapter, "name", None), str) or not adapter.name:
        raise AdapterError(
            f"{adapter!r} is not an adapter: it needs a non-empty str `name` and "
            f"{', '.join(_REQUIRED[1:])}; missing {missing or ['name']}. Subclass "
            "smoothcache.Adapter"
        )


REGISTRY = Registry()
