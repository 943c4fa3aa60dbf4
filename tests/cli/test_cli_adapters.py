"""``smoothcache adapters``: the adapter listing and ``--check MODULE:FACTORY``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import smoothcache
from smoothcache import registry
from smoothcache.adapters.diffusers_dit import DiffusersDiTAdapter
from tests.cli.helpers import error_line
from tests.cli.helpers import run as run_cli


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``smoothcache adapters *argv``."""
    return run_cli(capsys, "adapters", *argv)


def test_lists_every_adapter_with_origin_classes_and_kinds(capsys) -> None:
    code, out, err = run(capsys)
    assert code == 0 and err == ""
    header, *rows = out.splitlines()
    assert header.split() == ["name", "origin", "classes", "priority", "kinds"]
    for info in registry.REGISTRY.infos():
        line = next(r for r in rows if r.split()[:1] == [info.adapter.name])
        assert info.source in line
        assert all(kind in line for kind in info.adapter.kinds)
    pixart = next(r for r in rows if r.startswith("pixart "))
    assert pixart.split() == [
        "pixart", "built-in", "PixArtTransformer2DModel", "0", "attn1,", "attn2,", "ff",
    ]  # fmt: skip
    assert "docs/adapters.md" in out and "failed" not in out


class _BrokenPlugins(registry.Registry):
    """A registry whose only plugin failed to load."""

    def infos(self) -> list[registry.AdapterInfo]:
        return []

    @property
    def failures(self) -> dict[str, str]:
        return {"fake": "smoothcache plugin 'fake' (fake 1.0) failed and was skipped: X"}


def test_lists_failed_plugins(capsys, monkeypatch) -> None:
    monkeypatch.setattr(registry, "REGISTRY", _BrokenPlugins())
    code, out, _ = run(capsys)
    assert code == 0
    assert "1 plugin(s) failed to load" in out and "plugin 'fake' (fake 1.0)" in out


def test_check_shows_the_adapter_branches_and_source(capsys) -> None:
    code, out, err = run(
        capsys, "--check", "smoothcache.testing.models.tiny_diffusers:tiny_dit_pipeline"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].endswith("DiTTransformer2DModel (inside a DiTPipeline)")
    assert lines[1] == (
        "adapter: 'diffusers-dit' (class DiTTransformer2DModel, priority 0) from built-in"
    )
    assert "timestep source: <root>, read with argument('timestep', 1)" in lines
    assert "branches: 4 (attn1 x2, ff x2)" in lines
    assert any(
        line.split() == ["transformer_blocks.1.ff", "ff", "1", "FeedForward"] for line in lines
    )
    assert lines[-1] == "fast path: 2 block(s)"


def test_check_names_the_runners_up(capsys, monkeypatch) -> None:
    class Override(DiffusersDiTAdapter):
        name = "dit-override"
        priority = 2

    ranked = registry.Registry()
    ranked.register(Override())
    monkeypatch.setattr(registry, "REGISTRY", ranked)
    code, out, _ = run(
        capsys, "--check", "smoothcache.testing.models.tiny_diffusers:tiny_dit_transformer"
    )
    assert code == 0
    assert "adapter: 'dit-override' (class DiTTransformer2DModel, priority 2) from runtime" in out
    assert "also matches, ranked lower: 'diffusers-dit'" in out


def test_check_imports_from_the_current_directory(capsys, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "my_models.py").write_text(
        textwrap.dedent(
            """
            import torch
            from smoothcache.testing.models.original_dit import DiT

            class Factories:
                @staticmethod
                def tiny():
                    return DiT(depth=1)

            def unknown():
                return torch.nn.Sequential(torch.nn.Linear(2, 2))

            def broken():
                raise ValueError("no weights here")
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "--check", "my_models:Factories.tiny")
    assert code == 0
    assert "adapter: 'dit' (class DiT, priority 0) from built-in" in out
    assert "timestep source: t_embedder, read with argument('t', 0)" in out

    code, out, err = run(capsys, "--check", "my_models:unknown")
    assert code == 1 and out == ""
    line = error_line(err)
    assert "no adapter matches a torch.nn.modules.container.Sequential" in line
    assert all(a.name in line for a in smoothcache.adapters()) and "docs/adapters.md" in line

    code, _, err = run(capsys, "--check", "my_models:broken")
    assert code == 1 and "the factory my_models:broken raised ValueError" in error_line(err)


@pytest.mark.parametrize(
    ("spec", "code", "message"),
    [
        ("no_colon", 2, "--check takes MODULE:FACTORY"),
        ("sc_no_such_module:f", 1, "cannot import module 'sc_no_such_module'"),
        ("smoothcache.testing.models.tiny_diffusers:nope", 1, "does not name a callable factory"),
    ],
)
def test_check_bad_specs(capsys, spec: str, code: int, message: str) -> None:
    got, _, err = run(capsys, "--check", spec)
    assert got == code and message in error_line(err)
