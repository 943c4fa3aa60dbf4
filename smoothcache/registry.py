"""Adapter registry: loads plugins through pluggy and detects which adapter fits a model.

Built-in and third-party adapters arrive the same way, through the entry-point group
``smoothcache``. Setting ``SMOOTHCACHE_DISABLE_PLUGIN_AUTOLOAD=1`` skips every entry point that
does not belong to smoothcache itself; ``SMOOTHCACHE_DISABLE_PLUGINS=name,other`` skips the
plugins with those entry-point or distribution names (as pytest's ``-p no:NAME``). A plugin
that fails to import, implements a hook that smoothcache does not define, raises from its hook
or returns something other than adapters is skipped and reported by name: in a
:class:`~smoothcache.PluginWarning` and in :attr:`Registry.failures`. Loading never raises
because of someone else's plugin, even with warnings turned into errors (the warning is then
logged instead). The other adapters keep working.

Plugins load in a fixed order, whatever order the environment lists them in: built-ins first,
then by distribution name and entry-point name. When two plugins claim one entry-point name or
one adapter name, the first in that order keeps it and the other is skipped, with a message
naming both packages.

Every call into an adapter (``root``, ``matches``, ``branches``, ``timestep_source``,
``fast_forwards``) goes through :func:`call_adapter`: an exception raised inside it becomes an
:class:`AdapterError` naming the adapter and the package it came from.

Detection ranks the adapters that match a model by the rule documented on
:class:`smoothcache.Adapter`: the most specific ``model_classes`` entry first, then the higher
``priority``; a tie that remains is an error asking for ``adapter="name"``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy
from torch import nn

from smoothcache import hookspecs
from smoothcache.adapter import Adapter
from smoothcache.errors import AdapterError, PluginWarning, SmoothCacheError

logger = logging.getLogger(__name__)

AUTOLOAD_ENV = "SMOOTHCACHE_DISABLE_PLUGIN_AUTOLOAD"
DISABLE_ENV = "SMOOTHCACHE_DISABLE_PLUGINS"
GUIDE = "docs/adapters.md"
BUILTIN = "built-in"
_REQUIRED = ("name", "matches", "branches", "timestep_source", "root")


@dataclass(frozen=True)
class AdapterInfo:
    """An adapter and where it came from: ``built-in``, ``<distribution> <version>``,
    ``runtime plugin`` (registered on the plugin manager by hand) or ``runtime``
    (:func:`smoothcache.register`)."""

    adapter: Adapter
    source: str


@dataclass(frozen=True)
class Match:
    """An adapter that accepts a model, with what detection ranks it by.

    ``root`` is the module the adapter unwrapped; ``target`` the first class of the root's MRO
    named in the adapter's ``model_classes`` (``None`` when it matched without one) and
    ``depth`` that class's position in the MRO (the MRO's length when ``target`` is ``None``).
    """

    adapter: Adapter
    root: nn.Module
    target: str | None
    depth: int

    @property
    def rank(self) -> tuple[int, int]:
        """Sort key, best first: more specific (smaller depth), then higher priority."""
        return (self.depth, -_priority(self.adapter))

    def describe(self) -> str:
        """``'name' (class X, priority P)`` for messages and the CLI."""
        how = f"class {self.target}" if self.target else "structure only"
        return f"{self.adapter.name!r} ({how}, priority {_priority(self.adapter)})"


def _priority(adapter: Adapter) -> int:
    return getattr(adapter, "priority", 0)


def _dist_label(dist: Any) -> tuple[str, bool, str]:
    """A printable origin for an entry point's distribution, whether it is smoothcache's own,
    and the distribution's normalised name."""
    if dist is None:
        return "unknown distribution", False, ""
    name = dist.metadata["Name"] or "unknown"
    normal = name.lower().replace("_", "-")
    if normal == "smoothcache":
        return BUILTIN, True, normal
    return f"{name} {dist.version}", False, normal


def _disabled() -> set[str]:
    """Plugin names (entry point or distribution) listed in ``SMOOTHCACHE_DISABLE_PLUGINS``."""
    names = os.environ.get(DISABLE_ENV, "").replace(";", ",").split(",")
    return {n.strip().lower().replace("_", "-") for n in names if n.strip()}


def warn_once(message: str) -> None:
    """Warn with :class:`PluginWarning`; where warnings are errors, log instead of raising."""
    try:
        warnings.warn(message, PluginWarning, stacklevel=3)
    except PluginWarning:
        logger.error("%s", message)


def call_adapter(adapter: Adapter, method: str, *args: Any) -> Any:
    """``adapter.<method>(*args)``, with anything it raises turned into an AdapterError.

    The library's own errors pass through unchanged (an adapter may raise AdapterError on
    purpose). Others are wrapped, naming the adapter and its package, chained to the original.
    """
    try:
        return getattr(adapter, method)(*args)
    except SmoothCacheError:
        raise
    except Exception as exc:
        name = getattr(adapter, "name", type(adapter).__name__)
        raise AdapterError(
            f"adapter {name!r} (from {REGISTRY.origin(adapter)}) raised in {method}(): {exc!r}. "
            "This is a bug of the adapter: report it to its authors, or force another one with "
            "adapter='name'"
        ) from exc


def rank(model: Any, adapters: Iterable[Adapter]) -> list[Match]:
    """Every adapter of ``adapters`` that matches ``model``, best first by the detection rule.

    An adapter whose ``root`` or ``matches`` raises is skipped with a
    :class:`~smoothcache.PluginWarning`: one broken adapter must not stop detection for every
    model.
    """
    found: list[Match] = []
    for adapter in adapters:
        try:
            root = call_adapter(adapter, "root", model)
            if root is None or not call_adapter(adapter, "matches", root):
                continue
        except AdapterError as exc:
            warn_once(f"{exc} (checking a {type(model).__name__}); it was skipped")
            continue
        targets = set(getattr(adapter, "model_classes", ()))
        mro = type(root).__mro__
        depth = next((i for i, cls in enumerate(mro) if cls.__name__ in targets), len(mro))
        target = mro[depth].__name__ if depth < len(mro) else None
        found.append(Match(adapter, root, target, depth))
    found.sort(key=lambda match: match.rank)
    return found


class Registry:
    """Holds the plugin manager and the adapters it yields; loads lazily on first use."""

    def __init__(self) -> None:
        self._pm: pluggy.PluginManager | None = None
        self._origins: dict[str, str] = {}
        self._infos: list[AdapterInfo] | None = None
        self._runtime: list[Adapter] = []
        self._failures: dict[str, str] = {}

    @property
    def failures(self) -> dict[str, str]:
        """Plugins that were skipped, by plugin name: the message of each (loads plugins)."""
        self.infos()
        return dict(self._failures)

    def _manager(self) -> pluggy.PluginManager:
        if self._pm is not None:
            return self._pm
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        autoload = os.environ.get(AUTOLOAD_ENV, "") in ("", "0")
        disabled = _disabled()
        labels: dict[int, tuple[str, bool, str]] = {}  # one metadata parse per distribution
        points = []
        for ep in metadata.entry_points(group=hookspecs.PROJECT):
            dist = getattr(ep, "dist", None)
            if id(dist) not in labels:
                labels[id(dist)] = _dist_label(dist)
            points.append((ep, *labels[id(dist)]))
        # Built-ins first (their names take precedence), then a fixed order.
        points.sort(key=lambda item: (not item[2], item[3], item[0].name, item[0].value))
        for ep, origin, builtin, dist in points:
            if not (builtin or autoload):
                continue
            if not builtin and ({dist, ep.name.lower().replace("_", "-")} & disabled):
                logger.info(
                    "smoothcache plugin %r (%s) disabled by %s", ep.name, origin, DISABLE_ENV
                )
                continue
            if pm.get_plugin(ep.name) is not None:
                taken_by = self._origins.get(ep.name)
                if taken_by != origin:  # the same distribution found twice is not a conflict
                    clash = AdapterError(
                        f"the entry-point name {ep.name!r} is already taken by {taken_by}, "
                        f"which loads first; rename one entry point, or switch one package off "
                        f"with {DISABLE_ENV}={dist or ep.name}"
                    )
                    self._fail(f"{ep.name} ({origin})", origin, clash)
                continue
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except Exception as exc:  # a broken plugin must not take the others down
                self._fail(ep.name, origin, exc)
                continue
            unknown = [c.name for c in pm.get_hookcallers(plugin) or () if c.spec is None]
            if unknown:
                pm.unregister(plugin)
                hooks = ", ".join(unknown)
                self._fail(
                    ep.name,
                    origin,
                    AdapterError(
                        f"it implements {hooks}, which is not a smoothcache hook (the hook is "
                        "smoothcache_adapters)"
                    ),
                )
                continue
            self._origins[ep.name] = origin
        self._pm = pm
        return pm

    def _fail(self, plugin: str, origin: str, exc: BaseException) -> None:
        message = f"smoothcache plugin {plugin!r} ({origin}) failed and was skipped: {exc!r}"
        self._failures[plugin] = message
        warn_once(message)

    def infos(self) -> list[AdapterInfo]:
        """Every adapter with its origin: plugins in load order (built-ins first), then those
        added with :meth:`register`."""
        if self._infos is None:
            infos: list[AdapterInfo] = []
            seen: dict[str, str] = {}
            for impl in self._manager().hook.smoothcache_adapters.get_hookimpls():
                origin = self._origins.get(impl.plugin_name, "runtime plugin")
                try:
                    provided = impl.function()
                    if isinstance(provided, (str, bytes)) or not isinstance(provided, Iterable):
                        raise AdapterError(
                            f"smoothcache_adapters() must return a list of adapters, found "
                            f"{type(provided).__name__}"
                        )
                    provided = list(provided)
                    for adapter in provided:
                        _check_adapter(adapter)
                except Exception as exc:
                    self._fail(impl.plugin_name, origin, exc)
                    continue
                for adapter in provided:
                    if adapter.name in seen:
                        owner = seen[adapter.name]
                        taken = AdapterError(
                            f"adapter name {adapter.name!r} is taken by {owner}, which loads "
                            f"first; switch one package off with {DISABLE_ENV}=NAME"
                        )
                        self._fail(impl.plugin_name, origin, taken)
                        continue
                    seen[adapter.name] = origin
                    infos.append(AdapterInfo(adapter, origin))
            self._infos = infos
        return self._infos + [AdapterInfo(a, "runtime") for a in self._runtime]

    def origin(self, adapter: Adapter) -> str:
        """Where ``adapter`` came from (see :class:`AdapterInfo`), or ``unregistered``."""
        for info in self.infos():
            if info.adapter is adapter:
                return info.source
        return "unregistered"

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
        return ", ".join(sorted(a.name for a in self.adapters())) or "(none)"

    def matching(self, obj: Any, adapters: Sequence[Adapter] | None = None) -> list[Match]:
        """The adapters (all known ones, or ``adapters``) that match ``obj``, best first."""
        return rank(obj, self.adapters() if adapters is None else adapters)

    def kinds_of(self, obj: Any) -> list[str]:
        """The branch kinds the detected adapter finds in ``obj`` (a denoiser or a pipeline), in
        order of first appearance: the keys a per-kind schedule for it takes."""
        adapter = self.detect(obj)
        root = call_adapter(adapter, "root", obj)
        branches = [] if root is None else call_adapter(adapter, "branches", root)
        if not branches:
            raise AdapterError(
                f"adapter {adapter.name!r} finds no branch in a {type(obj).__name__}; pass the "
                "branch kinds yourself (smoothcache adapters lists each adapter's)"
            )
        return list(dict.fromkeys(b.kind for b in branches))

    def detect(self, obj: Any, adapters: Sequence[Adapter] | None = None) -> Adapter:
        """The adapter for ``obj`` (a denoiser module or an object holding one), by the rule
        on :class:`~smoothcache.Adapter`: most specific ``model_classes`` entry, then highest
        ``priority``. No match, or a tie for first place, is an :class:`AdapterError`.
        ``adapters`` restricts the candidates (default: every known adapter).
        """
        found = self.matching(obj, adapters)
        if not found:
            skipped = (
                f" Skipped plugins (smoothcache adapters lists why): {', '.join(self._failures)}."
                if self._failures
                else ""
            )
            raise AdapterError(
                f"no adapter matches a {type(obj).__module__}.{type(obj).__qualname__}. Known "
                f"adapters: {self._names()}.{skipped} Pass adapter='name' if one fits, or write "
                f"an adapter for this architecture and add it with smoothcache.register(...) or "
                f"a plugin (see {GUIDE})"
            )
        tied = [m for m in found if m.rank == found[0].rank]
        if len(tied) > 1:
            raise AdapterError(
                f"several adapters match a {type(obj).__qualname__} equally well: "
                f"{', '.join(m.describe() for m in tied)}. Choose one with adapter='name'; an "
                f"adapter wins detection by naming a more specific class in model_classes or "
                f"by a higher priority (see {GUIDE})"
            )
        return found[0].adapter


def _check_adapter(adapter: Any) -> None:
    """Refuse objects that cannot serve as adapters, naming what is wrong."""
    missing = [attr for attr in _REQUIRED if not hasattr(adapter, attr)]
    if missing or not isinstance(getattr(adapter, "name", None), str) or not adapter.name:
        raise AdapterError(
            f"{adapter!r} is not an adapter: it needs a non-empty str `name` and "
            f"{', '.join(_REQUIRED[1:])}; missing {missing or ['name']}. Subclass "
            "smoothcache.Adapter"
        )
    classes = getattr(adapter, "model_classes", ())
    if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
        raise AdapterError(
            f"adapter {adapter.name!r}: model_classes must be a tuple of class names (str), "
            f"found {classes!r}"
        )
    priority = getattr(adapter, "priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise AdapterError(f"adapter {adapter.name!r}: priority must be an int, found {priority!r}")


REGISTRY = Registry()
