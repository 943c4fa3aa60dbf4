"""A technique is one file and a registration: a toy technique, registered from outside the
engine's files, answers the skipped steps of the schedule that names it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

import smoothcache
from smoothcache.engine.technique import TECHNIQUES, Answer, Technique, register_technique
from smoothcache.errors import ArgumentError, ScheduleError
from smoothcache.testing.models.original_dit import DiT, sample_original_dit
from smoothcache.testing.models.random_init import randomize_
from tests.conftest import count_original_calls

STEPS = 6
ROW = [1, 0, 1, 0, 1, 1]


def _zeros(read: list[Any]) -> Any:
    return torch.zeros_like(read[-1])


class Zeros(Technique):
    """Answers a skipped step with zeros shaped like the last computed output; records each."""

    name = "zeros-for-test"

    def __init__(self) -> None:
        self.answers: list[torch.Tensor] = []

    def answer(self, constants: tuple[float, ...], newest: Any) -> Answer:
        def zeros(read: list[Any]) -> Any:
            self.answers.append(_zeros(read))
            return self.answers[-1]

        return zeros


@pytest.fixture
def zeros():
    technique = register_technique(Zeros())
    yield technique
    del TECHNIQUES[technique.name]


@pytest.fixture
def model():
    torch.manual_seed(0)
    dit = DiT(input_size=8, hidden_size=32, depth=2, num_heads=2).eval()
    randomize_(dit)
    return dit


def _generate(model) -> torch.Tensor:
    torch.manual_seed(3)
    with torch.no_grad():
        return sample_original_dit(model, num_steps=STEPS, batch=2, cfg_scale=1.5)


def test_a_registered_toy_technique_answers_the_skipped_steps(zeros, model) -> None:
    schedule = smoothcache.Schedule({"attn": ROW}, techniques={"attn": zeros.name})
    paths = [f"blocks.{i}.attn" for i in range(len(model.blocks))]
    with smoothcache.enabled(model, smoothcache.Schedule({"attn": ROW})):
        by_reuse = _generate(model)
    with count_original_calls(model, paths) as calls:
        with smoothcache.enabled(model, schedule) as session:
            by_zeros = _generate(model)
    skipped = ROW.count(0) * len(model.blocks)
    assert len(zeros.answers) == skipped  # every skipped call, and only those, asked it
    assert all(not answer.any() for answer in zeros.answers)
    assert dict(calls) == {path: ROW.count(1) for path in paths}  # the original was not called
    assert session.stats.total_reused == skipped and sum(session.stats.forecast.values()) == 0
    assert not torch.equal(by_zeros, by_reuse)  # zeros changed the result: it was used


def test_the_technique_is_the_only_difference_from_computing_everything(zeros, model) -> None:
    plain = _generate(model)
    everything = smoothcache.Schedule({"attn": [1] * STEPS}, techniques={"attn": zeros.name})
    with smoothcache.enabled(model, everything):
        assert torch.equal(_generate(model), plain)


def test_a_schedule_naming_techniques_saves_as_version_3_and_loads(zeros, tmp_path) -> None:
    schedule = smoothcache.Schedule({"attn": ROW, "mlp": ROW}, techniques={"attn": zeros.name})
    path = tmp_path / "s.json"
    schedule.save(path)
    data = json.loads(path.read_text())
    assert data["version"] == 3 and data["techniques"] == {"attn": zeros.name}
    loaded = smoothcache.Schedule.load(path)
    assert loaded.techniques == {"attn": zeros.name}
    assert loaded.fingerprint() == schedule.fingerprint()
    assert loaded.fingerprint() != smoothcache.Schedule(schedule.rows).fingerprint()
    plain = tmp_path / "plain.json"
    smoothcache.Schedule(schedule.rows).save(plain)
    assert json.loads(plain.read_text())["version"] == 2  # nothing named: the old format


def test_an_unknown_technique_is_refused_before_the_model_is_touched(model) -> None:
    schedule = smoothcache.Schedule({"attn": ROW}, techniques={"attn": "no-such"})
    forwards = [b.attn.__dict__.get("forward") for b in model.blocks]
    with pytest.raises(ScheduleError, match="names technique 'no-such', which is not registered"):
        smoothcache.enable(model, schedule)
    assert [b.attn.__dict__.get("forward") for b in model.blocks] == forwards


def test_registration_refuses_what_a_schedule_could_not_mean_one_way(zeros) -> None:
    with pytest.raises(ArgumentError, match="already registered"):
        register_technique(Zeros())
    with pytest.raises(ArgumentError, match="must be an instance"):
        register_technique(_zeros)  # type: ignore[arg-type]
    with pytest.raises(ScheduleError, match="techniques name key 'mlp', which has no row"):
        smoothcache.Schedule({"attn": ROW}, techniques={"mlp": zeros.name})
    with pytest.raises(ScheduleError, match="version 2 schedule cannot name techniques"):
        smoothcache.Schedule.from_dict(
            {
                "format": "smoothcache.schedule",
                "version": 2,
                "schedule": {"attn": ROW},
                "techniques": {"attn": zeros.name},
            }
        )
