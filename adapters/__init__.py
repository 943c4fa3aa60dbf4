"""Built-in adapters, installed as ``smoothcache.adapters``; one module per architecture family.

Each module is a pluggy plugin registered through the ``smoothcache`` entry-point group, exactly
as a third-party adapter would be. The package is also callable: ``smoothcache.adapters()``
lists every known adapter. (The public function and this subpackage share one name, so the
package module itself answers the call rather than one shadowing the other on import.)
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smoothcache.adapter import Adapter


class _CallableModule(types.ModuleType):
    def __call__(self) -> list[Adapter]:
        """Every adapter smoothcache knows: built-in, from plugins, and registered at run time."""
        from smoothcache.registry import REGISTRY

        return REGISTRY.adapters()


sys.modules[__name__].__class__ = _CallableModule
