"""Wan 2.2 A14B: a pipeline hands the run from ``transformer`` to ``transformer_2`` partway.

One schedule spans both denoisers with one step clock; the second one's first step computes
(it has nothing stored yet). The pipeline here is a stand-in with Wan 2.2's attributes and
hand-over rule (``t >= boundary`` runs ``transformer``), driving two tiny Wan transformers.
"""

from __future__ import annotations

import torch

import smoothcache
from smoothcache.testing.models.diffusers_zoo import ZOO, timestep_tensor
from tests.conftest import count_original_calls

ENTRY = ZOO["WanTransformer3DModel"]
STEPS = 8
ROW = [1, 0, 1, 0, 1, 0, 1, 1]  # step 4 is the first step of transformer_2
BOUNDARY = 500.0


class _Scheduler:
    def set_timesteps(self, num_steps: int) -> None:
        self.timesteps = torch.linspace(999, 1, num_steps)


class TwoStagePipeline:
    """What smoothcache sees of a Wan 2.2 pipeline: two transformers and a scheduler."""

    def __init__(self) -> None:
        self.transformer = ENTRY.factory()
        self.transformer_2 = ENTRY.factory()
        with torch.no_grad():  # another set of weights for the low-noise expert
            for param in self.transformer_2.parameters():
                param.add_(0.05 * torch.randn_like(param))
        self.scheduler = _Scheduler()

    @torch.no_grad()
    def __call__(self, num_steps: int = STEPS) -> torch.Tensor:
        self.scheduler.set_timesteps(num_steps)
        x = ENTRY.latent(1)
        for t in self.scheduler.timesteps.tolist():
            model = self.transformer if t >= BOUNDARY else self.transformer_2
            kwargs = {ENTRY.latent_arg: x, ENTRY.timestep_arg: timestep_tensor(ENTRY, t, 1)}
            x = x - 0.1 * ENTRY.output(model(**kwargs, **ENTRY.inputs(model, 1)))
        return x


def test_one_schedule_spans_both_denoisers():
    pipe = TwoStagePipeline()
    base = pipe()
    with smoothcache.enabled(pipe, {"attn1": [1] * STEPS}):
        assert torch.equal(pipe(), base)
    paths = ["blocks.0.attn1"]
    with count_original_calls(pipe.transformer, paths) as first:
        with count_original_calls(pipe.transformer_2, paths) as second:
            with smoothcache.enabled(pipe, {"attn1": ROW}) as session:
                out = pipe()
    assert [name for name, _ in session.roots] == ["", "transformer_2"]
    stats = session.stats
    assert stats.steps == STEPS and stats.generations == 1
    assert first["blocks.0.attn1"] == 2  # steps 0 and 2 (1 and 3 reused)
    assert stats.reused["blocks.0.attn1"] == 2
    # transformer_2 runs steps 4-7 of the same schedule: reuse at step 5 only
    assert second["blocks.0.attn1"] == 3
    assert stats.reused["transformer_2.blocks.0.attn1"] == 1
    assert not torch.equal(out, base)
    assert "_sc_session" not in vars(pipe.transformer_2.blocks[0].attn1)


def test_the_second_denoisers_first_step_computes():
    pipe = TwoStagePipeline()
    row = [1, 0, 1, 0, 0, 1, 0, 1]  # step 4 (transformer_2's first) reuses: nothing stored
    with smoothcache.enabled(pipe, {"attn1": row}) as session:
        pipe()
    assert session.stats.fallbacks["transformer_2.blocks.0.attn1"] == 1


def test_calibration_spans_both_denoisers_and_its_schedules_apply():
    pipe = TwoStagePipeline()
    with smoothcache.calibrating(pipe, lookahead=2) as recorder:
        pipe()
        pipe()
    curves = recorder.curves()
    paths = [b.path for b in curves.branches]
    assert "blocks.0.attn1" in paths and "transformer_2.blocks.0.attn1" in paths
    assert curves.num_steps == STEPS and curves.metadata["runs"] == 2
    first = paths.index("blocks.0.attn1")
    second = paths.index("transformer_2.blocks.0.attn1")
    # each expert's errors exist at its own steps only (steps 0-3 and 4-7, lag 1)
    assert (curves.count[first, 0, 0, 1:4] > 0).all() and not curves.count[first, 0, 0, 4:].any()
    assert (curves.count[second, 0, 0, 5:] > 0).all() and not curves.count[second, 0, 0, :5].any()
    curves.check_model(pipe)  # both experts' branches, as recorded (issue #24)
    for method in ("paper", "forecast"):
        schedule = curves.schedule(compute_fraction=0.75, method=method)
        with smoothcache.enabled(pipe, schedule) as session:
            pipe()
        assert sum(session.stats.reused.values()) > 0
