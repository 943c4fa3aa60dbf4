"""``smoothcache adapters``: list every adapter and where it comes from, or check one model.

``--check MODULE:FACTORY`` builds a model and shows what detection picks for it, the runners-up,
the timestep source, the branches and the fast path. The registry is read as
``registry.REGISTRY`` at call time, so a registry swapped in (by a test, say) is the one used.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

from smoothcache import registry
from smoothcache.binding import model_branches, timestep_source
from smoothcache.cli.text import table
from smoothcache.cli.validators import CommandError, UsageError
from smoothcache.errors import PluginWarning


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Declare ``adapters`` and its arguments on the subparsers ``sub``."""
    parser = sub.add_parser(
        "adapters",
        help="list the adapters and where they come from, or check which one fits a model",
        description="List every adapter (built-in or from a plugin package) with its origin, "
        "the classes it targets, its priority and its branch kinds, and every plugin that "
        "failed to load. With --check, build a model and show the adapter detection picks, the "
        "branches it finds and the timestep source.",
    )
    parser.add_argument(
        "--check",
        metavar="MODULE:FACTORY",
        help="import MODULE (the current directory is searched first) and call FACTORY() for a "
        "model or pipeline to check",
    )
    return parser


def _load_adapters() -> tuple[list[registry.AdapterInfo], dict[str, str]]:
    """The adapters and the failed plugins; the failures are printed, not warned about."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        return registry.REGISTRY.infos(), registry.REGISTRY.failures


def run(args: argparse.Namespace) -> int:
    """Print the adapter table and the failed plugins, or check the model ``--check`` names."""
    infos, failures = _load_adapters()
    if args.check is not None:
        return _check_factory(args.check, {i.adapter.name: i.source for i in infos})
    rows = [("name", "origin", "classes", "priority", "kinds")]
    for info in infos:
        adapter = info.adapter
        classes = ", ".join(getattr(adapter, "model_classes", ())) or "(by structure)"
        kinds = ", ".join(getattr(adapter, "kinds", ())) or "-"
        rows.append(
            (adapter.name, info.source, classes, str(getattr(adapter, "priority", 0)), kinds)
        )
    print("\n".join(table(rows)))
    if failures:
        print(f"\n{len(failures)} plugin(s) failed to load and were skipped:")
        for message in failures.values():
            print(f"  {message}")
    print(f"\nDetection: most specific class first, then priority; see {registry.GUIDE}")
    return 0


def _factory(spec: str) -> Callable[[], Any]:
    """The callable named by ``MODULE:FACTORY`` (``FACTORY`` may be dotted: ``Class.build``)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"--check takes MODULE:FACTORY (e.g. mymodels:tiny_dit), found {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        factory: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise CommandError(f"cannot import module {module_name!r}: {exc!r}") from None
    for part in attr.split("."):
        factory = getattr(factory, part, None)
    if not callable(factory):
        raise CommandError(f"{spec!r} does not name a callable factory in {module_name!r}")
    return factory


def _check_factory(spec: str, origins: dict[str, str]) -> int:
    """Build the model ``spec`` names and print what smoothcache finds in it."""
    factory = _factory(spec)
    try:
        obj = factory()
    except Exception as exc:
        raise CommandError(f"the factory {spec} raised {exc!r}") from None
    matches = registry.REGISTRY.matching(obj)
    adapter = registry.REGISTRY.detect(obj)  # no match, or a tie: an error on one line
    best = matches[0]
    root = best.root
    source = timestep_source(root, adapter)  # an AdapterError, reported like a CommandError
    pairs = model_branches(root, adapter)
    model = f"{type(root).__module__}.{type(root).__qualname__}"
    lines = [
        f"model: {model}" + ("" if root is obj else f" (inside a {type(obj).__name__})"),
        f"adapter: {best.describe()} from {origins.get(adapter.name, 'runtime')}",
    ]
    lines += [f"also matches, ranked lower: {m.describe()}" for m in matches[1:]]
    reader = getattr(source.read, "__qualname__", repr(source.read))
    lines.append(f"timestep source: {source.path or '<root>'}, read with {reader}")
    kinds: dict[str, int] = {}
    for branch, _ in pairs:
        kinds[branch.kind] = kinds.get(branch.kind, 0) + 1
    counts = ", ".join(f"{kind} x{n}" for kind, n in kinds.items())
    lines.append(f"branches: {len(pairs)} ({counts})")
    rows = [("path", "kind", "block", "module")]
    rows += [(b.path, b.kind, str(b.block), type(m).__name__) for b, m in pairs]
    lines += ["  " + line for line in table(rows)]
    describe = getattr(adapter, "describe", None)
    if callable(describe):
        lines += [f"{key}: {value}" for key, value in describe(root).items()]
    fast = list(registry.call_adapter(adapter, "fast_forwards", root))
    lines.append(f"fast path: {len(fast)} block(s)" if fast else "fast path: none")
    print("\n".join(lines))
    return 0
