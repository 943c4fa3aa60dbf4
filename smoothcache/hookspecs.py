"""pluggy hook specifications of smoothcache (namespace ``smoothcache``).

A plugin is a module or object with functions marked ``@hookimpl``; it is found through the
entry-point group ``smoothcache``. The built-in adapters are plugins of exactly this kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from smoothcache.adapter import Adapter

PROJECT = "smoothcache"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def smoothcache_adapters() -> list[Adapter]:
    """Return the adapters this plugin provides (instances of :class:`smoothcache.Adapter`)."""
    raise NotImplementedError  # a specification has no body of its own
