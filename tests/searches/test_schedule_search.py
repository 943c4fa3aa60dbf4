"""The schedule search (``method="sensitivity"``): run costs, the exact dynamic program, the
remainder of the budget, sensitivity measurement on a tiny model, the curves file, the CLI."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import smoothcache
from smoothcache import Branch, CalibrationError, ErrorCurves, Schedule, ScheduleError, Sensitivity
from smoothcache.cli import main
from smoothcache.measurements import all_but
from smoothcache.searches import METHODS
from smoothcache.searches.paper import paper_rule
from smoothcache.searches.sensitivity import (
    fewest_error_rows,
    predicted_error,
    run_costs,
    spend_remainder,
    split_run_cost,
)
from smoothcache.testing.models.tiny_diffusers import tiny_dit_transformer

# ---------------------------------------------------------------------------------------------
# Helpers: hand-made responses and curves, brute force
# ---------------------------------------------------------------------------------------------


def row_cost(row: tuple[int, ...], gram: np.ndarray) -> float:
    """The predicted error of a row computed directly: each run's change, squared, summed."""
    total, start, n = 0.0, 0, len(row)
    for step in range(1, n + 1):
        if step == n or row[step]:
            weights = np.zeros(n)
            length = step - start - 1
            for m in range(1, length + 1):
                weights[start + m] = length - m + 1
            total += weights @ gram @ weights
            start = step
    return total


def all_rows(steps: int) -> list[tuple[int, ...]]:
    """Every row that computes at its first and last step."""
    return [(1, *mid, 1) for mid in itertools.product((0, 1), repeat=steps - 2)]


A0, F0, A1, F1 = (Branch(f"b.{i}.{k}", k, i) for i in (0, 1) for k in ("attn", "ff"))
BRANCHES = (A0, F0, A1, F1)
KIND_GROUPS = ("all", all_but("attn"), all_but("ff"))
BLOCK_GROUPS = (*KIND_GROUPS, all_but(block=0), all_but(block=1))


def sensitivity_of(responses: dict[str, np.ndarray]) -> Sensitivity:
    """A sensitivity from responses shaped (steps, elements) per group, "all" first."""
    every = responses["all"].copy()
    every[[0, -1]] = 0.0
    grams, crosses = [], []
    for values in responses.values():
        values = values.copy()
        values[[0, -1]] = 0.0
        grams.append(values @ values.T / values.shape[1])
        crosses.append(every @ values.T / values.shape[1])
    return Sensitivity(tuple(responses), np.stack(grams), np.stack(crosses), {"runs": 1})


def random_sensitivity(steps: int, seed: int, groups: tuple[str, ...] = KIND_GROUPS) -> Sensitivity:
    """Independent random responses of every group (five elements each)."""
    rng = np.random.default_rng(seed)
    return sensitivity_of({g: rng.normal(size=(steps, 5)) for g in groups})


def hand_curves(steps: int, sensitivity: Sensitivity | None = None) -> ErrorCurves:
    """Curves of two blocks with branches ``attn`` and ``ff``, and a sensitivity if given."""
    shape = (len(BRANCHES), 1, 2, steps)
    mean = np.full(shape, 0.1)
    mean[..., 0, 0] = mean[..., 1, :2] = np.nan
    count = np.where(np.isnan(mean), 0, 4)
    std = np.where(count > 0, 0.01, np.nan)
    return ErrorCurves(BRANCHES, mean, std, count, {"model": "Hand"}, sensitivity)


# ---------------------------------------------------------------------------------------------
# Run costs, the dynamic program, the remainder of the budget
# ---------------------------------------------------------------------------------------------


def test_run_costs_by_hand() -> None:
    gram = np.diag([0.0, 1.0, 2.0, 3.0, 0.0])  # uncorrelated responses of size 1, 2, 3
    costs = run_costs(gram)
    # Compute at 0, reuse at 1, 2, 3: the changes telescope to 3 P1 + 2 P2 + 1 P3.
    assert costs[0, 3] == pytest.approx(9 * 1 + 4 * 2 + 1 * 3)
    assert costs[1, 2] == pytest.approx(4 * 2 + 1 * 3)
    assert costs[2, 1] == pytest.approx(3.0)
    assert (costs[:, 0] == 0).all()
    assert np.isinf(costs[0, 4]) and np.isinf(costs[3, 1])  # the last step never reuses
    # Correlated responses add before squaring: P1 = P2 gives (2 + 1)^2 for a run of two.
    same = sensitivity_of({"all": np.array([[0.0], [1.0], [1.0], [0.0]])}).gram[0]
    assert run_costs(same)[0, 2] == pytest.approx(9.0)


@pytest.mark.parametrize("seed", range(4))
def test_dynamic_program_is_exact(seed: int) -> None:
    steps = 8
    gram = random_sensitivity(steps, seed).gram[0]
    least, rows = fewest_error_rows(run_costs(gram))
    brute: dict[int, float] = {}
    for row in all_rows(steps):
        k = sum(row)
        brute[k] = min(brute.get(k, np.inf), row_cost(row, gram))
    assert sorted(rows) == sorted(brute) == list(range(2, steps + 1))
    assert np.isinf(least[:2]).all()
    for k, row in rows.items():
        assert len(row) == steps and sum(row) == k and row[0] == row[-1] == 1
        assert least[k] == pytest.approx(brute[k], rel=1e-9, abs=1e-12)
        assert row_cost(row, gram) == pytest.approx(least[k], rel=1e-9, abs=1e-12)


def test_dynamic_program_two_steps() -> None:
    least, rows = fewest_error_rows(run_costs(np.zeros((2, 2))))
    assert rows == {2: (1, 1)} and least[2] == 0.0


def test_split_run_cost_by_hand() -> None:
    steps = 7
    sensitivity = random_sensitivity(steps, 1)
    costs = run_costs(sensitivity.gram[0])
    for start, length in ((0, 5), (1, 3), (2, 1)):
        assert split_run_cost(sensitivity, 1, start, length, ()) == pytest.approx(
            costs[start, length]
        )
    # Compute at 0, reuse at 1..4, the left-out kind computes again at 2: step 1 counts every
    # branch's P1; step 2 the group's P1, P2; steps 3 and 4 every branch's from 3 on plus the
    # group's P1, P2.
    whole = np.array([0, 1, 0, 2, 1, 0, 0.0])
    part = np.array([0, 3, 3, 0, 0, 0, 0.0])
    expected = (
        whole @ sensitivity.gram[0] @ whole
        + 2 * whole @ sensitivity.cross[1] @ part
        + part @ sensitivity.gram[1] @ part
    )
    assert split_run_cost(sensitivity, 1, 0, 4, [2]) == pytest.approx(expected)


def test_spend_remainder_picks_the_best_extra_compute() -> None:
    steps = 9
    sensitivity = random_sensitivity(steps, 2)
    row = (1, 0, 0, 1, 0, 0, 0, 0, 1)
    groups = [(1, 2), (2, 2)]
    assert spend_remainder(row, sensitivity, groups, 1) == {}  # nothing fits
    extra = spend_remainder(row, sensitivity, groups, 2)
    ((group, steps_),) = extra.items()
    assert len(steps_) == 1 and row[steps_[0]] == 0
    candidates = [(g, t) for g, _ in groups for t in range(steps) if not row[t]]
    best = min(candidates, key=lambda c: predicted_split(sensitivity, row, c))
    assert (group, steps_[0]) == best
    more = spend_remainder(row, sensitivity, groups, 7)
    assert sum(2 * len(v) for v in more.values()) <= 7
    for steps_ in more.values():
        assert all(row[t] == 0 for t in steps_)


def predicted_split(sensitivity: Sensitivity, row: tuple[int, ...], choice: tuple) -> float:
    """The run-by-run cost of ``row`` with one extra compute ``(group, step)``."""
    group, step = choice
    starts = [i for i, flag in enumerate(row) if flag]
    total = 0.0
    for i, nxt in itertools.pairwise(starts):
        extra = [step] if i < step < nxt else []
        total += split_run_cost(sensitivity, group, i, nxt - i - 1, extra)
    return total


def test_predicted_error_counts_correlation_between_runs() -> None:
    steps = 7
    row = (1, 0, 1, 0, 1, 0, 1)
    same = np.zeros((steps, 1))
    same[[1, 3, 5]] = 1.0  # one response, repeated: the runs' changes add before squaring
    sensitivity = sensitivity_of({"all": same})
    assert predicted_error(sensitivity, row, {}) == pytest.approx(9.0)
    opposite = same.copy()
    opposite[3] = -1.0
    assert predicted_error(sensitivity_of({"all": opposite}), row, {}) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# ErrorCurves.schedule(method="sensitivity")
# ---------------------------------------------------------------------------------------------


def test_schedule_respects_the_budget() -> None:
    steps = 12
    curves = hand_curves(steps, random_sensitivity(steps, 0))
    _, shared_rows = fewest_error_rows(run_costs(curves.sensitivity.gram[0]))
    for target in (0.2, 0.35, 0.5, 0.75, 1.0):
        schedule = curves.schedule(compute_fraction=target, method="sensitivity")
        meta, rows = schedule.metadata, schedule.rows
        assert set(rows) == {"attn", "ff"}
        computed = 2 * sum(rows["attn"]) + 2 * sum(rows["ff"])  # two blocks per kind
        assert meta["compute_fraction"] == computed / (4 * steps) <= target
        shared = int(target * steps)  # every branch computes at the steps of one row ...
        for row in rows.values():
            assert row[0] == row[-1] == 1
            assert all(row[t] for t in range(steps) if shared_rows[shared][t])
        # ... and the remainder (here half a step: one kind) buys extra computes of one kind
        if int(2 * target * steps) % 2:
            assert rows["attn"] != rows["ff"] and sum(map(sum, rows.values())) == 2 * shared + 1
        assert meta["method"] == "sensitivity" and meta["compute_fraction_target"] == target
        assert "alpha" not in meta and meta["model"] == "Hand"
        extra = {}
        for index, kind in ((1, "attn"), (2, "ff")):
            steps_ = [t for t in range(steps) if rows[kind][t] and not shared_rows[shared][t]]
            if steps_:
                extra[index] = steps_
        expected = predicted_error(curves.sensitivity, shared_rows[shared], extra)
        assert meta["predicted_rms"] == pytest.approx(np.sqrt(expected))
    without = hand_curves(steps, sensitivity_of({"all": np.eye(steps)}))
    row = without.schedule(compute_fraction=0.35, method="sensitivity").rows["attn"]
    assert sum(row) == 4  # no kind groups measured: one row, the remainder unspent


def test_schedule_computes_where_the_output_is_sensitive() -> None:
    steps = 10
    sizes = np.ones(steps)
    sizes[6] = 100.0  # reusing at step 6 changes the final output a lot
    curves = hand_curves(steps, sensitivity_of({"all": np.diag(sizes)}))
    row = curves.schedule(compute_fraction=0.5, method="sensitivity").rows["attn"]
    assert row[6] == 1 and sum(row) == 5


def test_remainder_goes_to_the_kind_that_matters() -> None:
    steps = 10
    sizes = np.ones(steps)
    sizes[4] = 50.0
    # When every branch but ff reuses (ff computes) at step 4, the output barely changes; when
    # every branch but attn reuses, it changes as much as when everything reuses.
    responses = {"all": np.diag(sizes), all_but("attn"): np.diag(sizes), all_but("ff"): np.eye(10)}
    curves = hand_curves(steps, sensitivity_of(responses))
    rows = curves.schedule(compute_fraction=0.25, method="sensitivity").rows
    assert sum(rows["attn"]) == 2 and sum(rows["ff"]) == 3 and rows["ff"][4] == 1


def test_per_block_schedule() -> None:
    steps = 10
    sensitivity = random_sensitivity(steps, 3, BLOCK_GROUPS)
    curves = hand_curves(steps, sensitivity)
    shared = fewest_error_rows(run_costs(sensitivity.gram[0]))[1]
    schedule = curves.schedule(compute_fraction=0.45, method="sensitivity", per_block=True)
    rows = schedule.rows
    assert set(rows) == {"attn-0", "ff-0", "attn-1", "ff-1"}
    assert rows["attn-0"] == rows["ff-0"] and rows["attn-1"] == rows["ff-1"]
    assert rows["attn-0"] != rows["attn-1"]  # half a step left: one block computes once more
    assert {sum(rows["attn-0"]), sum(rows["attn-1"])} == {4, 5}
    for row in rows.values():
        assert all(row[t] for t in range(steps) if shared[4][t])
    assert schedule.metadata["per_block"] is True
    assert schedule.metadata["compute_fraction"] == 0.45


def test_without_a_method_the_best_search_the_curves_allow() -> None:
    plain = hand_curves(12)
    measured = hand_curves(12, random_sensitivity(12, 0))
    assert (
        plain.schedule(compute_fraction=0.5).rows
        == plain.schedule(compute_fraction=0.5, method="paper").rows
    )
    chosen = measured.schedule(compute_fraction=0.5)
    assert chosen.metadata["method"] == "sensitivity"
    assert chosen.rows == measured.schedule(compute_fraction=0.5, method="sensitivity").rows
    assert chosen.rows != plain.schedule(compute_fraction=0.5).rows
    assert measured.schedule(alpha=0.15).rows == plain.schedule(alpha=0.15, method="paper").rows
    assert (measured.best_method(), measured.best_method(threshold=True)) == (
        "sensitivity",
        "paper",
    )


def test_paper_rule_unchanged_by_a_sensitivity() -> None:
    plain = hand_curves(12)
    measured = hand_curves(12, random_sensitivity(12, 0))
    for kwargs in ({"alpha": 0.15}, {"compute_fraction": 0.5}, {"alpha": 0.25, "per_block": True}):
        expected = plain.schedule(**kwargs, method="paper").rows
        assert measured.schedule(**kwargs, method="paper").rows == expected
    assert plain.schedule(alpha=0.15).rows["attn"] == tuple(
        paper_rule(plain.curve("attn")[0], 0.15)
    )


def test_a_new_search_is_one_entry_in_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """``schedule(method=...)`` dispatches through METHODS: a toy search that computes every
    step is used by name once registered, and named among the choices when a method is not."""

    def compute_everything(curves, *, alpha, compute_fraction, per_block) -> Schedule:
        rows = {key: [1] * curves.num_steps for key, _ in curves.row_members(per_block)}
        return Schedule(rows=rows, metadata={"method": "everything"})

    curves = hand_curves(6)
    monkeypatch.setitem(METHODS, "everything", compute_everything)
    schedule = curves.schedule(method="everything")
    assert schedule.rows == {"attn": (1,) * 6, "ff": (1,) * 6}
    with pytest.raises(
        ScheduleError, match="methods: paper, sensitivity, forecast, fitted, everything"
    ):
        curves.schedule(method="nothing")


ZERO = sensitivity_of({"all": np.zeros((8, 1))})


@pytest.mark.parametrize(
    ("sensitivity", "kwargs", "message"),
    [
        (None, {"compute_fraction": 0.5}, "measure_sensitivity"),
        (ZERO, {"alpha": 0.1}, "give compute_fraction"),
        (ZERO, {}, "give compute_fraction"),
        (ZERO, {"compute_fraction": 0.2}, "first and last step, 0.2500"),
        (
            ZERO,
            {"compute_fraction": 0.5, "per_block": True},
            r"'all-but-block-0' was not measured; .* per_block=True\)",
        ),
        (ZERO, {"compute_fraction": 2.0}, r"must be in \(0, 1\]"),
    ],
)
def test_schedule_errors(sensitivity: Sensitivity | None, kwargs: dict, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        hand_curves(8, sensitivity).schedule(method="sensitivity", **kwargs)


def test_sensitivity_validation() -> None:
    zeros = np.zeros((1, 4, 4))
    with pytest.raises(CalibrationError, match="shaped"):
        Sensitivity(("all",), np.zeros((2, 4, 4)), zeros)
    with pytest.raises(CalibrationError, match="start with 'all'"):
        Sensitivity(("x",), zeros, zeros)
    with pytest.raises(CalibrationError, match="NaN"):
        Sensitivity(("all",), np.full((1, 4, 4), np.nan), zeros)
    with pytest.raises(CalibrationError, match="measured over 4 steps but the curves have 8"):
        hand_curves(8, Sensitivity(("all",), zeros, zeros))


# ---------------------------------------------------------------------------------------------
# Measuring on a tiny model
# ---------------------------------------------------------------------------------------------

STEPS = 6


def sampler(model: torch.nn.Module) -> callable:
    """A deterministic sampler for the tiny diffusers DiT, returning the final latents."""

    @torch.no_grad()
    def run() -> torch.Tensor:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 4, 8, 8, generator=gen)
        labels = torch.tensor([1, 2])
        for t in torch.linspace(900, 0, STEPS).long():
            x = x - 0.15 * model(x, timestep=t.expand(2), class_labels=labels).sample[:, :4]
        return x

    return run


def test_measure_sensitivity_on_a_tiny_model(tmp_path: Path) -> None:
    model = tiny_dit_transformer()
    run = sampler(model)
    progress: list[tuple[int, int]] = []
    curves = smoothcache.measure_sensitivity(
        model, run, per_block=True, on_run=lambda done, total: progress.append((done, total))
    )
    groups = ("all", all_but("attn1"), all_but("ff"), all_but(block=0), all_but(block=1))
    total = 2 + len(groups) * (STEPS - 2)  # the calibration run is the run without caching
    assert progress == [(i, total) for i in range(1, total + 1)]
    sensitivity = curves.sensitivity
    assert sensitivity.groups == groups and sensitivity.metadata["runs"] == total
    gram, cross = sensitivity.gram, sensitivity.cross
    assert gram.shape == cross.shape == (len(groups), STEPS, STEPS)
    assert np.isfinite(gram).all() and np.isfinite(cross).all()
    for array in (gram, cross):
        assert (array[:, [0, -1]] == 0).all() and (array[:, :, [0, -1]] == 0).all()
    np.testing.assert_allclose(gram, gram.transpose(0, 2, 1), rtol=1e-12)
    np.testing.assert_array_equal(cross[0], gram[0])
    assert (np.diagonal(gram, axis1=1, axis2=2)[:, 1:-1] > 0).all()  # reusing changes the output
    # Reproducible: the same curves and sampler measure the same grams, bit for bit.
    again = smoothcache.measure_sensitivity(model, run, curves.with_sensitivity(sensitivity))
    assert again.sensitivity.groups == groups[:3]
    np.testing.assert_array_equal(again.sensitivity.gram, gram[:3])
    np.testing.assert_array_equal(again.sensitivity.cross, cross[:3])
    # What the grams describe is the real change: one step of reuse at step 2, of every branch
    # and of every branch but the feed-forwards.
    baseline = run().double()
    changes = []
    reuse_at_2 = [1, 1, 0, 1, 1, 1]
    for rows in ({"attn1": reuse_at_2, "ff": reuse_at_2}, {"attn1": reuse_at_2, "ff": [1] * 6}):
        with smoothcache.enabled(model, rows):
            changes.append(run().double() - baseline)
    every, but_ff = changes
    assert gram[0, 2, 2] == pytest.approx(every.square().mean().item(), rel=1e-9)
    assert gram[2, 2, 2] == pytest.approx(but_ff.square().mean().item(), rel=1e-9)
    assert cross[2, 2, 2] == pytest.approx((every * but_ff).mean().item(), rel=1e-9)
    # The schedule runs on the model and stays within its budget.
    schedule = curves.schedule(compute_fraction=0.5, method="sensitivity")
    with smoothcache.enabled(model, schedule) as session:
        run()
    assert 1 - session.stats.reuse_fraction == schedule.metadata["compute_fraction"] <= 0.5
    # Saved and loaded, bit for bit.
    path = tmp_path / "curves.safetensors"
    curves.save(path)
    loaded = ErrorCurves.load(path)
    assert loaded.sensitivity.groups == groups
    assert loaded.sensitivity.gram.tobytes() == gram.tobytes()
    assert loaded.sensitivity.cross.tobytes() == cross.tobytes()
    assert loaded.sensitivity.metadata == sensitivity.metadata
    for per_block in (False, True):
        kwargs = {"compute_fraction": 0.4, "method": "sensitivity", "per_block": per_block}
        assert loaded.schedule(**kwargs).rows == curves.schedule(**kwargs).rows
    assert "sensitivity=['all'" in repr(loaded)


def test_curves_without_sensitivity_files_unchanged(tmp_path: Path) -> None:
    curves = hand_curves(6)
    path = tmp_path / "plain.safetensors"
    curves.save(path)
    with safe_open(str(path), framework="pt") as handle:
        assert sorted(handle.keys()) == ["count", "mean", "std"]
        assert "sensitivity" not in (handle.metadata() or {})
    assert ErrorCurves.load(path).sensitivity is None


def test_measure_rejects_bad_runs() -> None:
    model = tiny_dit_transformer()
    run = sampler(model)
    with smoothcache.calibrating(model) as recorder:
        run()
    curves = recorder.curves()
    noise = torch.Generator().manual_seed(0)

    def unseeded() -> torch.Tensor:
        return run() + torch.randn(1, generator=noise)

    with pytest.raises(CalibrationError, match="must be deterministic"):
        smoothcache.measure_sensitivity(model, unseeded, curves)
    with pytest.raises(CalibrationError, match="output_type='pt'"):
        smoothcache.measure_sensitivity(model, lambda: [run()], curves)
    with pytest.raises(CalibrationError, match="another model"):
        smoothcache.measure_sensitivity(tiny_dit_transformer(num_layers=1), run, curves)


def test_cli_schedule_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    curves = hand_curves(10, random_sensitivity(10, 0))
    path, out = tmp_path / "curves.safetensors", tmp_path / "s.json"
    curves.save(path)
    command = ["schedule", str(path), "-o", str(out)]
    assert main([*command, "--compute", "0.4", "--method", "sensitivity"]) == 0
    assert "method sensitivity, computes 40.0%" in capsys.readouterr().out
    expected = curves.schedule(compute_fraction=0.4, method="sensitivity")
    assert Schedule.load(out).rows == expected.rows
    assert main([*command, "--alpha", "0.15"]) == 0  # the paper's rule stays the default
    assert Schedule.load(out).rows == curves.schedule(alpha=0.15).rows
    assert main([*command, "--alpha", "0.1", "--method", "sensitivity"]) == 1
    assert "give compute_fraction" in capsys.readouterr().err
