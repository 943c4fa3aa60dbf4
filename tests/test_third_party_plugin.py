"""The example third-party plugin (examples/third_party_adapter) needs no change to smoothcache.

The package is built and installed with pip into a temporary directory (no network: no build
isolation, no dependencies), not into the environment, so every run tests its packaging and
leaves nothing behind. Discovery is checked in this process on a fresh registry; the package's
own tests (smoothcache's conformance kit, plus detection and caching through the public API)
run in a subprocess that sees the installed copy only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from smoothcache.registry import AUTOLOAD_ENV, Registry

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "third_party_adapter"
DIST = "smoothcache-hunyuandit"
MODULE = "smoothcache_hunyuandit"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """``(site, source)``: the package installed into ``site`` from a copy at ``source``.

    The build runs on a copy so that no build/ or egg-info lands in the repository; the copy's
    package directory is removed afterwards so that only the installed package is importable.
    """
    root = tmp_path_factory.mktemp("third-party")
    source, site = root / "src", root / "site"
    shutil.copytree(
        EXAMPLE,
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".*"),
    )
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-input", "--disable-pip-version-check", "-q", "--target", str(site), str(source)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"pip could not install the example:\n{result.stderr}"
    shutil.rmtree(source / MODULE)
    yield site, source
    sys.modules.pop(MODULE, None)


@pytest.fixture
def on_path(installed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The installed package on ``sys.path`` for one test (its module unloaded afterwards)."""
    monkeypatch.syspath_prepend(str(installed[0]))
    yield
    sys.modules.pop(MODULE, None)


def tiny_hunyuan_dit() -> torch.nn.Module:
    """A tiny ``HunyuanDiT2DModel`` (2 blocks); detection only looks at its structure."""
    from diffusers import HunyuanDiT2DModel

    return HunyuanDiT2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, patch_size=2, sample_size=8,
        hidden_size=16, num_layers=2, cross_attention_dim=16, cross_attention_dim_t5=16,
        pooled_projection_dim=16, text_len=3, text_len_t5=4,
    )  # fmt: skip


def test_the_entry_point_is_discovered_with_its_distribution(on_path: None) -> None:
    registry = Registry()
    origins = {info.adapter.name: info.source for info in registry.infos()}
    assert origins["hunyuan-dit"] == f"{DIST} 0.1.0"
    assert origins["dit"] == "built-in"  # the built-ins are still there
    assert registry.failures == {}
    model = tiny_hunyuan_dit()
    assert registry.detect(model).name == "hunyuan-dit"
    names = [m.adapter.name for m in registry.matching(model)]
    # the plugin and the built-in name the same class; the plugin's higher priority wins
    assert names == ["hunyuan-dit", "hunyuandit", "diffusers-generic"]


def test_autoload_off_skips_the_plugin(on_path: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    names = {a.name for a in Registry().adapters()}
    assert "hunyuan-dit" not in names and "dit" in names


def test_the_example_tests_pass_against_the_installed_package(
    installed: tuple[Path, Path],
) -> None:
    """Conformance kit, discovery, ``smoothcache.detect`` and ``smoothcache.enabled`` caching."""
    site, source = installed
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", "-W",
         "error::RuntimeWarning:smoothcache.*"],
        cwd=source, env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"\b\d+ passed\b", output.strip().splitlines()[-1]), output
    skips = [line for line in output.splitlines() if line.startswith("SKIPPED")]
    assert all("declares no fast path" in line for line in skips), skips  # nothing else skipped
