"""Adapter registry: plugins through entry points, detection, runtime registration."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from diffusers import DiTTransformer2DModel
from torch import nn

import smoothcache
import smoothcache.binding
from smoothcache import AdapterError
from smoothcache import registry as registry_module
from smoothcache.adapters.diffusers_dit import DiffusersDiTAdapter
from smoothcache.registry import DISABLE_ENV, Registry
from smoothcache.testing.models.original_dit import DiT


def test_builtins_are_found_through_entry_points():
    names = [a.name for a in smoothcache.adapters()]
    assert {"dit", "diffusers-dit"} <= set(names)
    infos = {i.adapter.name: i.source for i in Registry().infos()}
    assert infos["dit"] == "built-in" and infos["diffusers-dit"] == "built-in"


def test_detection(original_dit, diffusers_dit):
    from smoothcache.testing.models.tiny_diffusers import tiny_dit_pipeline

    assert smoothcache.detect(original_dit).name == "dit"
    assert smoothcache.detect(diffusers_dit).name == "diffusers-dit"
    assert smoothcache.detect(tiny_dit_pipeline()).name == "diffusers-dit"
    others = [a for a in smoothcache.adapters() if a.name != "dit"]
    assert not any(a.matches(original_dit) for a in others)


def test_unknown_model_lists_adapters_and_the_guide():
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(AdapterError, match=r"no adapter matches") as caught:
        smoothcache.detect(model)
    message = str(caught.value)
    assert all(a.name in message for a in smoothcache.adapters())
    assert "docs/adapters.md" in message and "adapter='name'" in message
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


# -- plugins that fail are reported by name; the others keep working ---------------------------

PLUGIN_PACKAGE = "sc_fake_plugins"

_PLUGIN_MODULES = {
    "good": """
        import smoothcache

        class TinyNetAdapter(smoothcache.Adapter):
            name = "tiny-net-plugin"
            model_classes = ("_TinyNet",)

            def branches(self, model):
                return [smoothcache.Branch(f"blocks.{i}.mix", "mix", i) for i in range(2)]

            def timestep_source(self, model):
                return smoothcache.TimestepSource("", smoothcache.argument("t", 1))

        @smoothcache.hookimpl
        def smoothcache_adapters():
            return [TinyNetAdapter()]
        """,
    "raising": """
        import smoothcache

        @smoothcache.hookimpl
        def smoothcache_adapters():
            raise RuntimeError("the plugin's hook broke")
        """,
    "non_adapter": """
        import smoothcache

        @smoothcache.hookimpl
        def smoothcache_adapters():
            return [object()]
        """,
    "single": """
        import smoothcache
        from smoothcache.adapters.dit import OriginalDiTAdapter

        @smoothcache.hookimpl
        def smoothcache_adapters():
            return OriginalDiTAdapter()  # not a list
        """,
    "typo": """
        import smoothcache

        @smoothcache.hookimpl
        def smoothcache_adapter():  # misspelt hook name
            return []
        """,
    "taken": """
        import smoothcache
        from smoothcache.adapters.dit import OriginalDiTAdapter

        @smoothcache.hookimpl
        def smoothcache_adapters():
            return [OriginalDiTAdapter()]  # the name 'dit' belongs to the built-in
        """,
}


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    """A distribution ``fake-plugins 1.0`` whose entry points cover every way a plugin fails.

    importlib.metadata finds ``*.dist-info`` directories on ``sys.path``, exactly as for an
    installed package; the plugin modules live in a package beside it.
    """
    package = tmp_path / PLUGIN_PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, code in _PLUGIN_MODULES.items():
        (package / f"{name}.py").write_text(textwrap.dedent(code))
    info = tmp_path / "fake_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugins\nVersion: 1.0\n")
    points = {
        "fake-good": f"{PLUGIN_PACKAGE}.good",
        "fake-missing": "sc_fake_module_that_does_not_exist",
        "fake-raising": f"{PLUGIN_PACKAGE}.raising",
        "fake-non-adapter": f"{PLUGIN_PACKAGE}.non_adapter",
        "fake-single": f"{PLUGIN_PACKAGE}.single",
        "fake-typo": f"{PLUGIN_PACKAGE}.typo",
        "fake-taken": f"{PLUGIN_PACKAGE}.taken",
        "dit": f"{PLUGIN_PACKAGE}.good",  # an entry-point name a built-in already uses
    }
    lines = ["[smoothcache]", *(f"{name} = {target}" for name, target in points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for module in [m for m in sys.modules if m.startswith(PLUGIN_PACKAGE)]:
        del sys.modules[module]


def test_failing_plugins_are_reported_by_name_and_the_others_work(fake_plugins):
    registry = Registry()
    with pytest.warns(smoothcache.PluginWarning) as caught:
        infos = {info.adapter.name: info.source for info in registry.infos()}
    expected = {
        "fake-missing": "ModuleNotFoundError",
        "fake-raising": "the plugin's hook broke",
        "fake-non-adapter": "is not an adapter",
        "fake-single": "must return a list of adapters, found OriginalDiTAdapter",
        "fake-typo": "smoothcache_adapter, which is not a smoothcache hook",
        "fake-taken": "adapter name 'dit' is taken by built-in",
        "dit (fake-plugins 1.0)": "entry-point name 'dit' is already taken by built-in",
    }
    failures = registry.failures
    assert set(failures) == set(expected)
    for plugin, error in expected.items():
        assert error in failures[plugin], failures[plugin]
        assert f"'{plugin}' (fake-plugins 1.0)" in failures[plugin]
    warned = [str(w.message) for w in caught]
    assert sorted(warned) == sorted(failures.values())
    # The working plugin and every built-in are there, with their origins.
    assert infos["tiny-net-plugin"] == "fake-plugins 1.0"
    assert infos["dit"] == infos["diffusers-dit"] == "built-in"
    assert registry.detect(_TinyNet()).name == "tiny-net-plugin"


def test_autoload_off_loads_no_third_party_plugin(fake_plugins, monkeypatch):
    monkeypatch.setenv("SMOOTHCACHE_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = Registry()
    assert "tiny-net-plugin" not in {a.name for a in registry.adapters()}
    assert "dit" in {a.name for a in registry.adapters()}
    assert registry.failures == {}


def test_broken_plugins_never_raise_with_warnings_as_errors(fake_plugins, caplog):
    """Under ``-W error`` (or pytest's error filters) a broken plugin is logged, not raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry = Registry()
        names = {a.name for a in registry.adapters()}
        assert registry.detect(_TinyNet()).name == "tiny-net-plugin"
    assert "tiny-net-plugin" in names and "dit" in names
    assert len(registry.failures) == 7
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert sorted(logged) == sorted(registry.failures.values())


_TWIN = """
    import smoothcache

    class Twin(smoothcache.Adapter):
        name = "twin"
        model_classes = ("_TinyNet",)
        package = {package!r}

        def branches(self, model):
            return [smoothcache.Branch(f"blocks.{{i}}.mix", "mix", i) for i in range(2)]

        def timestep_source(self, model):
            return smoothcache.TimestepSource("", smoothcache.argument("t", 1))

    @smoothcache.hookimpl
    def smoothcache_adapters():
        return [Twin()]
    """


@pytest.fixture
def twin_packages(tmp_path, monkeypatch):
    """Two distributions, ``twin-a`` and ``twin-b``, each shipping an adapter named ``twin``."""
    for dist in ("twin-a", "twin-b"):
        module = f"sc_{dist.replace('-', '_')}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(_TWIN.format(package=dist)))
        info = tmp_path / f"{module}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[smoothcache]\n{dist} = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for module in ("sc_twin_a", "sc_twin_b"):
        sys.modules.pop(module, None)


@pytest.mark.parametrize("listed", ["as found", "reversed"])
def test_one_adapter_name_in_two_packages_is_decided_the_same_way(
    twin_packages, monkeypatch, listed
):
    found = registry_module.metadata.entry_points
    if listed == "reversed":  # the environment lists distributions in another order
        monkeypatch.setattr(
            registry_module.metadata,
            "entry_points",
            lambda **kw: list(reversed(list(found(**kw)))),
        )
    registry = Registry()
    with pytest.warns(smoothcache.PluginWarning, match="twin"):
        twin = registry.get("twin")
    assert twin.package == "twin-a"  # first by distribution name, whatever the listing order
    message = registry.failures["twin-b"]
    assert "twin-b 1.0" in message and "taken by twin-a 1.0" in message and DISABLE_ENV in message


def test_a_plugin_can_be_switched_off_by_name(twin_packages, monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "twin-a")
    registry = Registry()
    assert registry.get("twin").package == "twin-b"
    assert registry.failures == {}
    monkeypatch.setenv(DISABLE_ENV, "twin-b, TWIN_A")  # entry-point or distribution names
    assert "twin" not in {a.name for a in Registry().adapters()}


class _Broken(DiffusersDiTAdapter):
    """An adapter whose ``method`` raises a plain exception."""

    name = "broken-third-party"

    def __init__(self, method):
        self.method = method

    def __getattribute__(self, attr):
        if attr == object.__getattribute__(self, "method"):
            raise_it = object.__getattribute__(self, "_raise")
            return raise_it
        return object.__getattribute__(self, attr)

    def _raise(self, *_args):
        raise KeyError("transformer_blocks")


@pytest.mark.parametrize("method", ["branches", "timestep_source", "fast_forwards", "matches"])
def test_an_exception_inside_an_adapter_is_an_adapter_error(diffusers_dit, method):
    from tests.conftest import assert_same_state, module_state

    before = module_state(diffusers_dit)
    adapter = _Broken(method)
    with pytest.raises(
        AdapterError,
        match=rf"'broken-third-party' \(from unregistered\) raised in {method}\(\): KeyError",
    ) as info:
        smoothcache.enable(diffusers_dit, {"attn1": [1, 0, 1]}, adapter=adapter)
    assert isinstance(info.value.__cause__, KeyError)
    assert_same_state(before, module_state(diffusers_dit))


# -- detection rule: most specific class, then priority -----------------------------------------


class _DiTOverride(DiffusersDiTAdapter):
    """A third-party adapter for the same class as the built-in ``diffusers-dit``."""

    name = "dit-override"
    priority = 1


class _MyDiT(DiTTransformer2DModel):
    """A subclass of diffusers' DiT, as a third party might ship."""


class _MyDiTAdapter(DiffusersDiTAdapter):
    name = "my-dit"
    model_classes = ("_MyDiT",)
    priority = -5  # lower than the built-in's: specificity still wins


class _StructureOnly(DiffusersDiTAdapter):
    name = "by-structure"
    model_classes = ()
    priority = 100

    def matches(self, model):
        return isinstance(getattr(model, "transformer_blocks", None), nn.ModuleList)


def _registry(*adapters: smoothcache.Adapter) -> Registry:
    registry = Registry()
    for adapter in adapters:
        registry.register(adapter)
    return registry


def test_same_class_higher_priority_overrides_the_builtin(diffusers_dit):
    registry = _registry(_DiTOverride())
    assert registry.detect(diffusers_dit).name == "dit-override"
    assert [m.adapter.name for m in registry.matching(diffusers_dit)] == [
        "dit-override",
        "diffusers-dit",
        "diffusers-generic",  # structure only, lowest priority: always last
    ]
    tie = type("Tie", (_DiTOverride,), {"name": "dit-tie", "priority": 0})()
    with pytest.raises(AdapterError, match=r"equally well: 'diffusers-dit'.*'dit-tie'"):
        _registry(tie).detect(diffusers_dit)


def test_an_adapter_for_a_subclass_wins_over_one_for_its_base(diffusers_dit):
    diffusers_dit.__class__ = _MyDiT
    registry = _registry(_MyDiTAdapter())
    assert registry.detect(diffusers_dit).name == "my-dit"
    best, base = registry.matching(diffusers_dit)[:2]
    assert (best.target, best.depth) == ("_MyDiT", 0)
    assert (base.adapter.name, base.target, base.depth) == (
        "diffusers-dit",
        "DiTTransformer2DModel",
        1,
    )
    assert "class DiTTransformer2DModel" in base.describe()


def test_matching_by_structure_only_is_least_specific(diffusers_dit):
    registry = _registry(_StructureOnly())
    assert registry.detect(diffusers_dit).name == "diffusers-dit"
    *_, structural, generic = registry.matching(diffusers_dit)
    assert structural.adapter.name == "by-structure" and structural.target is None
    assert generic.adapter.name == "diffusers-generic" and generic.target is None


def test_naming_the_adapter_always_wins(diffusers_dit, monkeypatch):
    registry = _registry(_DiTOverride())
    monkeypatch.setattr(smoothcache.binding, "REGISTRY", registry)
    with smoothcache.enabled(diffusers_dit, {"attn1": [1, 1]}) as session:
        assert session.adapter.name == "dit-override"
    with smoothcache.enabled(diffusers_dit, {"attn1": [1, 1]}, adapter="diffusers-dit") as session:
        assert session.adapter.name == "diffusers-dit"


def test_default_matches_uses_model_classes(diffusers_dit):
    assert _DiTOverride().matches(diffusers_dit)
    bare = type("Bare", (smoothcache.Adapter,), {"name": "bare"})()
    with pytest.raises(NotImplementedError, match="declares no model_classes"):
        bare.matches(diffusers_dit)


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"model_classes": "DiT"}, "model_classes must be a tuple of class names"),
        ({"model_classes": (DiT,)}, "model_classes must be a tuple of class names"),
        ({"priority": "high"}, "priority must be an int"),
    ],
)
def test_malformed_detection_attributes_are_refused(attrs, message):
    adapter = type("Bad", (_TinyAdapter,), {"name": "bad", **attrs})()
    with pytest.raises(AdapterError, match=message):
        Registry().register(adapter)
