"""Schedules at another step count: :meth:`Schedule.remapped` and ``enabled(..., remap=True)``.

A mapped row keeps its compute share and where it computes densely; forecast orders stay valid;
a pipeline run of another step count is an error that names the opt-in unless ``remap=True``,
and with it every run uses the schedule mapped to its own steps (the branch really skips, the
output changes, and computing everything stays bit-identical to no caching).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

import smoothcache
from smoothcache import ArgumentError, Schedule, ScheduleError, StepCountError
from smoothcache.engine.plans import StepPlans
from smoothcache.engine.remapping import RunMapper
from smoothcache.remap import position_fractions, step_fractions
from tests.conftest import (
    assert_same_state,
    count_original_calls,
    module_state,
    tiny_flux_pipeline,
)

SHIPPED = "dit-xl-2-256/ddim-50/alpha-0.18"


def _share(row) -> float:
    return sum(row) / len(row)


@pytest.mark.parametrize("steps", [7, 20, 28, 50, 100, 143])
@pytest.mark.parametrize("every", [2, 3, 5])
def test_a_mapped_row_keeps_its_compute_share(steps, every):
    source = Schedule.uniform(50, every, ["attn", "ff"])
    mapped = source.remapped(num_steps=steps)
    assert mapped.num_steps == steps
    for key, row in mapped.rows.items():
        assert row[0] == 1
        assert abs(sum(row) - _share(source.rows[key]) * steps) <= 1.0


def test_any_row_keeps_its_share_to_the_nearest_step():
    # rows with dense runs, where one new step's part of the path holds more than one
    # compute's share (the first two were found so), and a seeded spread of random ones
    rows = ["110100000110110110010000", "111111110101111100111111111101011001101"]
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 60))
        rows.append("1" + "".join(rng.choice(["0", "1"], n - 1, p=[0.4, 0.6])))
    for text in rows:
        row = [int(c) for c in text]
        for steps in (len(row) * 9 // 4, 28, 54, 110, len(row) // 2 + 1):
            mapped = Schedule({"attn": row}).remapped(num_steps=steps).rows["attn"]
            assert abs(sum(mapped) - max(1.0, _share(row) * steps)) <= 0.5 + 1e-9, (text, steps)


def test_upsampling_spreads_computes_instead_of_pairing_them():
    source = Schedule.uniform(50, 2, ["attn"])
    row = source.remapped(num_steps=100).rows["attn"]
    text = "".join(map(str, row))
    assert "11" not in text[:-3]  # the source's last two steps both compute
    assert abs(sum(row) - 51) <= 1


def test_dense_regions_stay_dense_where_they_were():
    # all of the first 10 steps, then every 5th: the mapped row is dense in its first fifth
    row = [1] * 10 + [1 if i % 5 == 0 else 0 for i in range(40)]
    source = Schedule({"attn": row})
    mapped = source.remapped(num_steps=25).rows["attn"]
    assert mapped[:5] == (1, 1, 1, 1, 1)
    assert _share(mapped[5:]) < 0.4
    assert abs(sum(mapped) - _share(row) * 25) <= 1


def test_the_shipped_paper_schedule_maps_to_other_step_counts():
    source = Schedule.shipped(SHIPPED)
    for steps in (20, 28, 100):
        mapped = source.remapped(num_steps=steps)
        assert abs(mapped.compute_fraction - source.compute_fraction) <= 1.5 / steps
        assert mapped.metadata["remapped_from"] == {"num_steps": 50, "by": "step index"}
        assert mapped.metadata["num_steps"] == steps
        assert mapped.metadata["name"] == SHIPPED


@pytest.mark.parametrize(("steps", "top"), [(100, 2), (50, 2), (28, 1), (20, 1)])
def test_forecast_orders_are_recapped_by_the_computes_before_them(steps, top):
    """Orders follow the source, capped by the computes before each step, and at 1 on fewer
    steps than the source's (each step spans more of the path); a strength < 1 tail keeps
    the source's spacing and its orders."""
    source = Schedule.uniform(50, 3, ["attn"], order=2)
    mapped = source.remapped(num_steps=steps)
    row, orders = mapped.rows["attn"], mapped.orders["attn"]
    done = 0
    for flag, order in zip(row, orders):
        if flag:
            assert order == 0
            done += 1
        else:
            assert order <= min(top, done - 1)
    assert max(orders) == top
    tail = source.remapped(num_steps=50, start=20)
    assert max(tail.orders["attn"]) == 2


def test_the_same_steps_give_back_the_same_schedule():
    source = Schedule.uniform(30, 2, ["attn"])
    assert source.remapped(num_steps=30) is source


def test_a_tail_of_the_steps_for_strength_below_one():
    row = [1] * 20 + [1 if i % 4 == 0 else 0 for i in range(30)]
    source = Schedule({"attn": row})
    mapped = source.remapped(num_steps=50, start=20)
    assert mapped.num_steps == 30
    assert mapped.rows["attn"][0] == 1
    # the tail's own share (a quarter), not the whole row's
    assert abs(sum(mapped.rows["attn"]) - 0.25 * 30) <= 1


def test_positions_place_a_run_along_the_recorded_timesteps():
    assert np.allclose(position_fractions([10, 8, 6, 4, 2, 0], [10, 5, 0]), [0, 2.5, 5])
    assert np.allclose(position_fractions([0, 1, 2], [0.5, 9.0]), [0.5, 2.0])  # clipped
    assert np.allclose(step_fractions(50, 5), [0, 10, 20, 30, 40])
    # flow matching: sigma 1 - j / N at step j of N
    uniform = (1 - np.arange(50) / 50).tolist()
    source = Schedule(Schedule.uniform(50, 3, ["attn"]).rows, {"timesteps": uniform})
    assert source.positions == tuple(uniform)
    twenty = (1 - np.arange(20) / 20).tolist()
    by_position = source.remapped(positions=twenty)
    by_index = source.remapped(num_steps=20)
    assert by_position.rows == by_index.rows
    assert by_position.metadata["timesteps"] == pytest.approx(twenty)
    # a run whose steps crowd the end (a shifted sampler) computes more of its early steps
    # in the source's sparse region: the rows differ
    shifted = (1 - np.linspace(0, 0.95, 20) ** 0.5).tolist()
    assert source.remapped(positions=shifted).rows != by_index.rows


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda s: s.remapped(), "exactly one of num_steps="),
        (lambda s: s.remapped(20, positions=[3, 2, 1]), "exactly one of num_steps="),
        (lambda s: s.remapped(positions=[3, 2, 1]), "remapped(num_steps=N)"),
        (lambda s: s.remapped(num_steps=True), "num_steps must be an integer"),
        (lambda s: s.remapped(num_steps=0), "num_steps must be an integer"),
        (lambda s: s.remapped(num_steps=10, start=10), "start=10 leaves no step"),
    ],
)
def test_bad_remaps_say_what_to_pass(call, words):
    with pytest.raises(ScheduleError, match=words.replace("(", r"\(").replace(")", r"\)")):
        call(Schedule.uniform(50, 2, ["attn"]))


def test_positions_must_move_one_way():
    source = Schedule({"attn": [1, 0, 1, 0]}, {"timesteps": [4, 3, 2, 1]})
    with pytest.raises(ScheduleError, match="strictly one way"):
        source.remapped(positions=[4, 2, 3])
    with pytest.raises(ScheduleError, match="the other way"):
        source.remapped(positions=[1, 2, 3])


# -- in a pipeline ----------------------------------------------------------------------------

STEPS = 6
ROW = [1, 0, 1, 0, 1, 1]
PATH = "transformer_blocks.0.attn"


def _flux() -> tuple[FluxPipeline, dict]:
    pipe = tiny_flux_pipeline()
    transformer = pipe.transformer
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randn(1, 8, transformer.config.joint_attention_dim, generator=gen)
    pooled = torch.randn(1, transformer.config.pooled_projection_dim, generator=gen)
    call = dict(prompt_embeds=prompt, pooled_prompt_embeds=pooled, height=32, width=32)
    return pipe, call


def _run(pipe: FluxPipeline, call: dict, steps: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    out = pipe(num_inference_steps=steps, output_type="latent", generator=generator, **call)
    return out.images


def test_another_step_count_is_an_error_that_names_the_opt_in():
    pipe, call = _flux()
    _run(pipe, call, STEPS)  # diffusers adds its own hook registry at the first run
    before = module_state(pipe.transformer)
    with pytest.raises(StepCountError, match=r"remap=True.*remapped\(num_steps=N\)"):
        with smoothcache.enabled(pipe, {"attn": ROW}):
            _run(pipe, call, 9)
    assert_same_state(before, module_state(pipe.transformer))


@pytest.mark.parametrize("steps", [4, 9])
def test_remap_follows_each_runs_steps_and_really_skips(steps):
    pipe, call = _flux()
    base = _run(pipe, call, steps)
    everything = {"attn": [1] * STEPS, "ff": [1] * STEPS}
    with smoothcache.enabled(pipe, everything, remap=True) as session:
        assert torch.equal(_run(pipe, call, steps), base)
    assert session.schedule.num_steps == steps
    expected = Schedule({"attn": ROW}).remapped(num_steps=steps).rows["attn"]
    with count_original_calls(pipe.transformer, [PATH]) as calls:
        with smoothcache.enabled(pipe, {"attn": ROW}, remap=True) as session:
            out = _run(pipe, call, steps)
            back = _run(pipe, call, STEPS)  # the schedule's own count: the schedule as given
    assert session.schedule.rows["attn"] == tuple(ROW)
    assert calls[PATH] == sum(expected) + sum(ROW)
    assert session.stats.reused[PATH] == expected.count(0) + ROW.count(0)
    assert not torch.equal(out, base)
    with smoothcache.enabled(pipe, {"attn": ROW}) as plain:
        assert torch.equal(_run(pipe, call, STEPS), back)
    assert plain.stats.reused[PATH] == ROW.count(0)


def test_remap_needs_a_pipeline_and_leaves_a_bare_model_untouched():
    pipe, _ = _flux()
    before = module_state(pipe.transformer)
    with pytest.raises(ArgumentError, match=r"schedule.remapped\(num_steps=N\)"):
        smoothcache.enable(pipe.transformer, {"attn": ROW}, remap=True)
    with pytest.raises(ArgumentError, match="calls_per_step"):
        smoothcache.enable(pipe, {"attn": ROW}, remap=True, calls_per_step=1)
    with pytest.raises(ArgumentError, match="remap must be True or False"):
        smoothcache.enable(pipe, {"attn": ROW}, remap="yes")
    assert_same_state(before, module_state(pipe.transformer))


def test_a_partial_run_starts_where_the_scheduler_begins():
    scheduler = FlowMatchEulerDiscreteScheduler()
    schedule = Schedule({"attn": [1, 0] * 25})
    bound = SimpleNamespace(holder=SimpleNamespace(scheduler=scheduler), model=object())
    mapper = RunMapper(schedule, StepPlans(schedule, []), [], bound)
    scheduler.set_timesteps(50)
    assert mapper.run_steps() == (50, 0)
    assert mapper.for_run()[0] is schedule
    scheduler.set_begin_index(20)  # what image-to-image pipelines do at strength 0.6
    assert mapper.run_steps() == (50, 20)
    mapped, plans = mapper.for_run()
    assert mapped.num_steps == 30 and isinstance(plans, StepPlans)
    assert mapper.for_run()[0] is mapped  # made once per run shape
