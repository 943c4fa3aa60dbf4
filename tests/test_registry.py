"""Adapter registry: plugins through entry points, detection, runtime registration."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import smoothcache
from smoothcache import AdapterError
from smoothcache.registry import Registry


def test_builtins_are_found_through_entry_points():
    names = [a.name for a in smoothcache.adapters()]
    assert {"dit", "diffusers-dit"} <= set(names)
    infos = {i.adapter.name: i.source for i in Registry().infos()}
    assert infos["dit"] == "built-in" and infos["diffusers-dit"] == "built-in"


def test_detection(original_dit, diffusers_dit):
    from tests.models.tiny_diffusers import tiny_dit_pipeline

    assert smoothcache.detect(original_dit).name == "dit"
    assert smoothcache.detect(diffusers_dit).name == "diffusers-dit"
    assert smoothcache.detect(tiny_dit_pipeline()).name == "diffusers-dit"
    others = [a for a in smoothcache.adapters() if a.name != "dit"]
    assert not any(a.matches(original_dit) for a in others)


def test_unknown_model_lists_adapters_and_the_guide():
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(AdapterError, match=r"no adapter matches.*dit.*diffusers-dit.*adapters\.md"):
        smoothcache.detect(model)
    with pytest.raises(AdapterError, match="no adapter matches"):
        smoothcache.enable(model, {"attn": [1, 0]})
    assert "forward" not in model[0].__dict__


def test_forcing_an_adapter(original_dit):
    with pytest.raises(AdapterError, match=r"no adapter is named 'nope'.*known adapters"):
        smoothcache.enable(original_dit, {"attn": [1, 0]}, adapter="nope")
    with pytest.raises(AdapterError, match="'diffusers-dit' does not recognise"):
        smoothcache.enable(original_dit, {"attn": [1, 0]}, adapter="diffusers-dit")
    with smoothcache.enabled(original_dit, {"attn": [1, 1]}, adapter="dit") as session:
        assert session.adapter.name == "dit"


class _TinyBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(x)


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_TinyBlock(), _TinyBlock()])

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x * t)
        return x


class _TinyAdapter(smoothcache.Adapter):
    name = "tiny-net-for-tests"
    kinds = ("mix",)

    def matches(self, model):
        return isinstance(model, _TinyNet)

    def branches(self, model):
        return [smoothcache.Branch(f"blocks.{i}.mix", "mix", i) for i in range(len(model.blocks))]

    def timestep_source(self, model):
        return smoothcache.TimestepSource("", smoothcache.argument("t", 1))


def test_runtime_registration_detects_and_caches():
    registry = Registry()
    registry.register(_TinyAdapter())
    net = _TinyNet()
    assert registry.detect(net).name == "tiny-net-for-tests"
    with pytest.raises(AdapterError, match="already registered"):
        registry.register(_TinyAdapter())
    with pytest.raises(AdapterError, match="is not an adapter"):
        registry.register(object())  # type: ignore[arg-type]


def test_ambiguous_adapters_need_a_choice():
    registry = Registry()
    registry.register(_TinyAdapter())

    class Twin(_TinyAdapter):
        name = "tiny-twin"

    registry.register(Twin())
    with pytest.raises(AdapterError, match=r"several adapters match.*adapter='name'"):
        registry.detect(_TinyNet())

    class Preferred(_TinyAdapter):
        name = "tiny-preferred"
        priority = 10

    registry.register(Preferred())
    assert registry.detect(_TinyNet()).name == "tiny-preferred"


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )


def test_import_is_silent_and_light():
    result = _run(
        """
        import sys
        import smoothcache
        heavy = {"diffusers", "SmoothCache", "matplotlib", "sklearn", "transformers"}
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n" and result.stderr == ""


def test_autoload_off_keeps_builtins():
    result = _run(
        "import smoothcache; print(sorted(a.name for a in smoothcache.adapters()))",
        SMOOTHCACHE_DISABLE_PLUGIN_AUTOLOAD="1",
    )
    assert result.returncode == 0, result.stderr
    assert "'dit'" in result.stdout and "'diffusers-dit'" in result.stdout
