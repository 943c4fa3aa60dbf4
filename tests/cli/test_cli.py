"""The ``smoothcache`` command line, end to end on a tiny DiT pipeline saved to a directory."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import smoothcache
from smoothcache import ErrorCurves, Schedule
from smoothcache.cli import main
from smoothcache.testing.models.tiny_diffusers import tiny_dit_pipeline
from tests.cli.helpers import error_line, run

STEPS = 5


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DiTPipeline saved with save_pretrained (loaded back offline by the CLI)."""
    path = tmp_path_factory.mktemp("pipe") / "tiny-dit"
    tiny_dit_pipeline().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def calibrated(pipeline_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One ``smoothcache calibrate`` run shared by the tests that read its files and output."""
    out = tmp_path_factory.mktemp("calibrated")
    curves, schedule = out / "curves.safetensors", out / "curves.json"
    argv = [
        "calibrate", str(pipeline_dir), "--class-labels", "1", "2", "3",
        "--steps", str(STEPS), "--batch-size", "2", "--guidance-scale", "4",
        "--scheduler", "DDIMScheduler", "--seed", "7", "-o", str(curves),
        "--schedule-compute", "0.5",
    ]  # fmt: skip
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return {
        "code": code,
        "out": stdout.getvalue(),
        "err": stderr.getvalue(),
        "curves": curves,
        "schedule": schedule,
    }


def test_calibrate_end_to_end(calibrated: dict) -> None:
    code, out, err = calibrated["code"], calibrated["out"], calibrated["err"]
    assert code == 0, err
    assert f"wrote {calibrated['curves']}: 2 runs, 3 samples, {STEPS} steps" in out
    assert "calibrating" in err and f"{2 * STEPS}/{2 * STEPS}" in err  # the progress bar
    curves = ErrorCurves.load(calibrated["curves"])
    meta = curves.metadata
    assert (meta["runs"], meta["num_steps"], meta["num_samples"]) == (2, STEPS, 6)
    assert meta["solver"] == "DDIMScheduler" and meta["pipeline"] == "DiTPipeline"
    assert meta["class_labels"] == [1, 2, 3] and meta["guidance_scale"] == 4.0
    assert meta["adapter"] == "diffusers-dit" and len(meta["timesteps"]) == STEPS
    schedule = Schedule.load(calibrated["schedule"])
    assert schedule.metadata["compute_fraction"] <= 0.5
    assert schedule.metadata["compute_fraction_target"] == 0.5
    assert schedule.metadata["solver"] == "DDIMScheduler"

    # The CLI recorded what an in-process calibration of the same runs records.
    pipe = tiny_dit_pipeline()
    with smoothcache.calibrating(pipe) as recorder:
        for seed, labels in ((7, [1, 2]), (8, [3])):
            generator = torch.Generator("cpu").manual_seed(seed)
            pipe(class_labels=labels, num_inference_steps=STEPS, guidance_scale=4.0,
                 generator=generator, output_type="pt")  # fmt: skip
    direct = recorder.curves()
    np.testing.assert_array_equal(direct.count, curves.count)
    np.testing.assert_allclose(direct.mean, curves.mean, rtol=1e-6)
    curves.check_model(pipe)


def test_schedule_command(
    calibrated: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "s.json"
    code, out, err = run(
        capsys, "schedule", str(calibrated["curves"]), "--alpha", "0.3", "--per-block",
        "-o", str(out_path),
    )  # fmt: skip
    assert code == 0, err
    assert "alpha=0.3" in out
    schedule = Schedule.load(out_path)
    expected = ErrorCurves.load(calibrated["curves"]).schedule(0.3, per_block=True)
    assert schedule.rows == expected.rows
    assert set(schedule.rows) == {"attn1-0", "ff-0", "attn1-1", "ff-1"}
    assert schedule.metadata["per_block"] is True and schedule.metadata["alpha"] == 0.3


def test_show_schedule_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schedule = Schedule(
        {"attn": [1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1], "mlp": [1] * 12},
        metadata={"alpha": 0.2, "method": "paper"},
    )
    path = tmp_path / "s.json"
    schedule.save(path)
    code, out, err = run(capsys, "show", str(path))
    assert code == 0, err
    lines = out.splitlines()
    assert "12 steps, 2 rows" in lines[0] and "alpha 0.2" in lines[0]
    assert lines[1].endswith("0         1 ")
    assert lines[2] == "step  012345678901"
    assert lines[3] == "attn  #..#..#..#.#  5/12  41.7%"
    assert lines[4] == "mlp   ############  12/12 100.0%"
    assert lines[5] == "total: 17/24 row-steps compute (70.8%)"
    fitted = Schedule(
        {"attn": [1, 1, 0, 1, 0, 1]},
        orders={"attn": [0, 0, 1, 0, 1, 0]},
        weights={"attn": [None, None, [-0.9, 1.8], None, None, None]},
    )
    fitted.save(path)
    code, out, err = run(capsys, "show", str(path))
    assert code == 0, err
    assert "attn: 1 forecasts with fitted weights (the others Lagrange's)" in out.splitlines()


def test_forecast_schedule_command_and_grid(
    calibrated: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "f.json"
    code, out, err = run(
        capsys, "schedule", str(calibrated["curves"]), "--compute", "0.5", "--method", "forecast",
        "-o", str(out_path),
    )  # fmt: skip
    assert code == 0, err
    assert "method forecast" in out
    schedule = Schedule.load(out_path)
    expected = ErrorCurves.load(calibrated["curves"]).schedule(
        compute_fraction=0.5, method="forecast"
    )
    assert schedule.rows == expected.rows and schedule.orders == expected.orders
    hand = Schedule(
        {"attn": [1, 1, 0, 0, 1, 0, 1], "mlp": [1] * 7}, orders={"attn": [0, 0, 1, 0, 0, 2, 0]}
    )
    hand.save(tmp_path / "h.json")
    code, out, err = run(capsys, "show", str(tmp_path / "h.json"))
    assert code == 0, err
    assert "attn  ##1.#2#  4/7  57.1%" in out.splitlines()
    assert "k: forecast of order k" in out
    code, out, err = run(capsys, "show", str(tmp_path / "h.json"), "--method", "forecast")
    assert code == 2 and "apply to curves files only" in error_line(err)


def test_show_curves_and_plots(
    calibrated: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "curves.png"
    code, out, err = run(
        capsys, "show", str(calibrated["curves"]), "--alpha", "0.3", "--plot", str(plot)
    )
    assert code == 0, err
    assert "DiTTransformer2DModel" in out and "6 sample rows in 2 runs" in out
    for label in ("attn1 j=1", "attn1 j=3", "ff j=2"):
        assert label in out
    expected = ErrorCurves.load(calibrated["curves"]).schedule(0.3)
    for key, row in expected.rows.items():
        assert any(line.startswith(key) and "".join("#" if f else "." for f in row) in line
                   for line in out.splitlines())  # fmt: skip
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["show", str(calibrated["curves"]), "--per-block"]) == 2
    assert main(["show", str(calibrated["schedule"]), "--alpha", "0.1"]) == 2
    schedule_plot = tmp_path / "schedule.png"
    assert main(["show", str(calibrated["schedule"]), "--plot", str(schedule_plot)]) == 0
    assert schedule_plot.read_bytes()[:4] == b"\x89PNG"


def test_plot_without_matplotlib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.json"
    Schedule.uniform(4, 2, ["attn"]).save(path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, _, err = run(capsys, "show", str(path), "--plot", str(tmp_path / "x.png"))
    assert code == 1
    assert "pip install smoothcache[plot]" in error_line(err)


def test_usage_errors_exit_2(
    pipeline_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    curves = tmp_path / "c.safetensors"
    cases = [
        [],
        ["frobnicate"],
        ["schedule", str(curves), "-o", "x.json"],  # neither --alpha nor --compute
        ["schedule", str(curves), "--alpha", "0.1", "--compute", "0.5", "-o", "x.json"],
        ["schedule", str(curves), "--alpha", "-1", "-o", "x.json"],
        ["schedule", str(curves), "--alpha", "nan", "-o", "x.json"],
        ["schedule", str(curves), "--compute", "0", "-o", "x.json"],
        ["schedule", str(curves), "--compute", "1.5", "-o", "x.json"],
        ["calibrate", str(pipeline_dir)],  # no labels or prompts
        ["calibrate", str(pipeline_dir), "--class-labels", "1", "--steps", "1"],
    ]
    for argv in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2, (argv, err)
        assert "error:" in err
    for argv, message in [
        (["--prompts", "a cat"], "takes no 'prompt'; pass --class-labels"),
        (["--class-labels", "1", "--scheduler", "NoSuchScheduler"], "not a diffusers scheduler"),
    ]:
        code, _, err = run(capsys, "calibrate", str(pipeline_dir), "--steps", "2", *argv)
        assert code == 2
        assert message in error_line(err)
    assert main(["--help"]) == 0


def test_failures_exit_1_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(8,), down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",), norm_num_groups=4,
    )  # fmt: skip
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "unet-pipe")
    (tmp_path / "empty").mkdir()
    noise = tmp_path / "noise.bin"
    noise.write_bytes(np.random.default_rng(0).bytes(64))
    foreign = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    schedule = tmp_path / "s.json"
    Schedule.uniform(4, 2, ["attn"]).save(schedule)
    broken = tmp_path / "broken.json"
    broken.write_text('{"attn": [1, 0, 2]}')
    cases = [
        (["calibrate", str(tmp_path / "missing"), "--class-labels", "1"], "does not exist"),
        (["calibrate", str(tmp_path / "empty"), "--class-labels", "1"], "cannot load a diffusers"),
        (["calibrate", str(tmp_path / "unet-pipe"), "--class-labels", "1"], "no adapter matches"),
        (["show", str(tmp_path / "missing.json")], "does not exist"),
        (["show", str(noise)], "neither a schedule file (JSON) nor a curves file"),
        (["show", str(foreign)], "not a smoothcache curves file"),
        (["show", str(broken)], "may hold only 0 (reuse) and 1 (compute)"),
        (["schedule", str(schedule), "--alpha", "0.1", "-o", "x.json"], "not a smoothcache curves"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == 1, (argv, err)
        line = error_line(err)
        assert line.startswith("smoothcache: error: ") and message in line, line


def test_budget_too_small_exits_1(calibrated: dict, capsys: pytest.CaptureFixture[str]) -> None:
    curves = str(calibrated["curves"])
    code, _, err = run(capsys, "schedule", curves, "--compute", "0.01", "-o", "x.json")
    assert code == 1  # the forecast search, by default
    assert "no schedule computes at most 0.01" in error_line(err)
    code, _, err = run(
        capsys, "schedule", curves, "--compute", "0.01", "--method", "paper", "-o", "x.json"
    )
    assert code == 1
    assert "smallest achievable fraction" in error_line(err)


def test_python_dash_m(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    Schedule.uniform(4, 2, ["attn", "mlp"]).save(path)
    done = subprocess.run(
        [sys.executable, "-m", "smoothcache", "show", str(path)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "attn  #.#" in done.stdout
    assert json.loads(path.read_text())["num_steps"] == 4


def test_hostile_arguments_give_one_error_line_before_any_work(
    pipeline_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """Issue #14, item 14: each case is one ``error:`` line, never a traceback; bad outputs,
    devices and seeds are refused before the pipeline is even loaded."""
    calibrate = ["calibrate", str(pipeline_dir), "--steps", "2"]
    cases = [
        ([*calibrate, "--class-labels", "1", "--seed", str(2**70)], 2, "--seed"),
        ([*calibrate, "--class-labels", "1", "--device", "nonsense"], 2, "not a torch device"),
        ([*calibrate, "--class-labels", "1", "-o", str(tmp_path / "no" / "c.st")], 2, "folder"),
        ([*calibrate, "--class-labels", "-3"], 2, "--class-labels"),
        ([*calibrate, "--class-labels", "1", "--guidance-scale", "inf"], 2, "finite"),
        (["show", "a\x00b.json"], 2, "not a usable path"),
        (["show", str(tmp_path / "s.json"), "--plot", str(tmp_path / "no" / "p.png")], 2, "folder"),
        (["schedule", "c.safetensors", "--compute", "0.5", "-o", str(tmp_path)], 2, "a folder"),
    ]
    if not torch.cuda.is_available():
        cases.append(([*calibrate, "--class-labels", "1", "--device", "cuda"], 2, "not available"))

    with monkeypatch.context() as patch:
        patch.setattr("smoothcache.cli.calibrate.load_pipeline", _no_work)
        for argv, status, message in cases:
            code, _, err = run(capsys, *argv)
            assert code == status, (argv, err)
            assert message in error_line(err), err
            assert "Traceback" not in err
    # a class label the model does not have fails in the pipeline: one line, exit 1
    code, _, err = run(capsys, *calibrate, "--class-labels", "5000", "-o", str(tmp_path / "c.st"))
    assert code == 1
    assert "the pipeline raised during calibration run 1: IndexError" in error_line(err)
    assert not (tmp_path / "c.st").exists()


def test_show_takes_shipped_names(capsys: pytest.CaptureFixture[str]) -> None:
    """As in Python, a shipped schedule's name works where a file does (issue #15)."""
    code, out, _ = run(capsys, "show", "dit-xl-2-256/ddim-50/alpha-0.18")
    assert code == 0
    assert out.startswith("schedule dit-xl-2-256/ddim-50/alpha-0.18: 50 steps, 2 rows")
    assert "\nattn  #...#" in out
    code, _, err = run(capsys, "show", "dit-xl-2-256/ddim-51")
    assert code == 1
    line = error_line(err)
    assert "no shipped schedule has that name" in line and "dit-xl-2-256/ddim-50/fora-2" in line


def test_numbers_are_bounded_as_a_person_reads_them_and_written_in_ascii(
    pipeline_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """Issue #24, item 4: a bound says "at least" or "at most", not the int32 range; digits of
    other scripts and Python's "1_000" are not numbers on a command line (issue #24, item 3)."""
    calibrate = ["calibrate", str(pipeline_dir), "--class-labels", "1"]
    cases = [
        ([*calibrate, "--steps", "1"], "--steps: must be at least 2, found 1"),
        ([*calibrate, "--steps", str(2**40)], "must be at most 2,147,483,647"),
        ([*calibrate, "--steps", "\u0665"], "expected an integer, found '\u0665'"),
        ([*calibrate, "--steps", "1_0"], "expected an integer, found '1_0'"),
        ([*calibrate, "--guidance-scale", "\u0661.5"], "expected a finite number"),
        (["schedule", "c.safetensors", "--compute", "0.\u0665", "-o", "x.json"], "a finite number"),
    ]
    with monkeypatch.context() as patch:
        patch.setattr("smoothcache.cli.calibrate.load_pipeline", _no_work)
        for argv, message in cases:
            code, _, err = run(capsys, *argv)
            assert code == 2, (argv, err)
            assert message in error_line(err), err
            assert "2147483647" not in err


def _no_work(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("the pipeline was loaded before the arguments were checked")


def test_tune_takes_a_saved_pipeline_and_its_call_arguments(
    pipeline_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tuned.json"
    with pytest.warns(UserWarning, match="tune goes on without the sensitivity"):
        code, stdout, stderr = run(
            capsys,
            *["tune", str(pipeline_dir), "--compute", "0.5", "--class-labels", "1", "2"],
            *["--steps", str(STEPS), "--guidance-scale", "4", "-o", str(out)],
        )
    assert code == 0, stderr
    schedule = Schedule.load(out)
    assert schedule.num_steps == STEPS and set(schedule.rows) <= {"attn1", "ff"}
    assert "sampler runs in all" in stderr and f"wrote {out}" in stdout
    # DiTPipeline turns even latents into NumPy, which a graph forbids: tune says it went on
    # without the sensitivity, in the report (and as the warning above)
    assert "sensitivity: not estimated: run() fails with gradients on" in stdout
    code, _, stderr = run(capsys, "tune", str(pipeline_dir), "--compute", "0.5", "--prompts", "x")
    assert code == 2 and "takes no 'prompt'; pass --class-labels" in stderr
