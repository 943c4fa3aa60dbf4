"""Schedule parsing, validation, files and shipped schedules."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import smoothcache
from smoothcache import Schedule, ScheduleError, ScheduleFileError
from smoothcache.schedule import parse_key

kinds = st.sampled_from(["attn", "mlp", "attn1", "ff", "spatial.attn", "temporal.cross_attn"])
keys = st.one_of(kinds, st.builds(lambda k, b: f"{k}-{b}", kinds, st.integers(0, 40)))


@st.composite
def valid_rows(draw):
    n = draw(st.integers(1, 60))
    names = draw(st.lists(keys, min_size=1, max_size=5, unique=True))
    flags = st.lists(st.integers(0, 1), min_size=n - 1, max_size=n - 1)
    return {k: [1, *draw(flags)] for k in names}


@given(valid_rows())
@settings(max_examples=60, deadline=None)
def test_valid_rows_round_trip(tmp_path_factory, rows):
    schedule = Schedule.from_dict(rows)  # the original SmoothCache format, as is
    assert schedule.num_steps == len(next(iter(rows.values())))
    assert {k: list(v) for k, v in schedule.rows.items()} == rows
    again = Schedule.from_dict(schedule.to_dict())
    assert again.rows == schedule.rows
    path = tmp_path_factory.mktemp("s") / "s.json"
    schedule.save(path)
    assert Schedule.load(path).rows == schedule.rows
    total = sum(len(v) for v in rows.values())
    assert schedule.compute_fraction == sum(map(sum, rows.values())) / total


@given(valid_rows(), st.data())
@settings(max_examples=60, deadline=None)
def test_corrupted_rows_are_rejected_with_the_key(rows, data):
    key = data.draw(st.sampled_from(sorted(rows)))
    bad = dict(rows)
    damage = data.draw(st.sampled_from(["value", "length", "first", "type"]))
    if damage == "value":
        bad[key] = [*rows[key][:-1], data.draw(st.sampled_from([2, -1, 0.5, True, "1", None]))]
        if len(rows[key]) == 1:
            bad[key] = [bad[key][0]]
    elif damage == "length":
        bad[key] = [*rows[key], 1]
        if len(rows) == 1:
            bad["other-99"] = rows[key]
    elif damage == "first":
        bad[key] = [0, *rows[key][1:]]
    else:
        bad[key] = "1010"
    with pytest.raises(ScheduleError, match="row '"):
        Schedule.from_dict(bad)


@pytest.mark.parametrize("key", ["", "3attn", "attn-", "attn-x", "at tn", "attn--1"])
def test_bad_keys(key):
    with pytest.raises(ScheduleError, match="not a branch kind"):
        Schedule.from_dict({key: [1, 0]})


def test_parse_key():
    assert parse_key("attn1") == ("attn1", None)
    assert parse_key("attn1-3") == ("attn1", 3)
    assert parse_key("spatial.cross_attn-7") == ("spatial.cross_attn", 7)


def test_per_block_key_overrides_kind():
    schedule = Schedule.from_dict({"attn": [1, 0, 1], "attn-2": [1, 1, 1]})
    assert schedule.row_for("attn", 2) == (1, 1, 1)
    assert schedule.row_for("attn", 0) == (1, 0, 1)
    assert schedule.row_for("mlp", 0) is None


def test_uniform_is_fora():
    s = Schedule.uniform(10, 3, ["attn", "mlp"])
    assert s.rows["attn"] == (1, 0, 0, 1, 0, 0, 1, 0, 0, 1)
    assert s.metadata["every"] == 3
    assert Schedule.uniform(5, 2, ["attn"]).rows["attn"] == (1, 0, 1, 0, 1)
    assert Schedule.uniform(4, 2, ["a"]).rows["a"] == (1, 0, 1, 1)  # last step always computes
    with pytest.raises(ScheduleError, match="every must be a positive integer"):
        Schedule.uniform(10, 0, ["attn"])


def test_uniform_takes_its_kinds_from_a_model_or_pipeline():
    from smoothcache.reference import load_reference_model
    from tests.conftest import tiny_flux_pipeline

    digits = Schedule.uniform(10, 3, model=load_reference_model())
    assert list(digits.rows) == ["attn1", "ff"]
    pipe = tiny_flux_pipeline()
    flux = Schedule.uniform(10, 3, order=2, model=pipe)
    assert set(flux.rows) == {"attn", "ff", "ff_context", "single"}
    assert flux.rows["single"] == digits.rows["ff"] and flux.forecasts
    with smoothcache.enabled(pipe, flux):  # the keys fit the model they came from
        pass
    for bad, words in (
        ({}, "exactly one of kinds="),
        ({"kinds": ["attn"], "model": pipe}, "exactly one of kinds="),
        ({"kinds": "attn"}, "branch kinds as strings"),
        ({"kinds": [1]}, "branch kinds as strings"),
    ):
        with pytest.raises(ScheduleError, match=words):
            Schedule.uniform(10, 3, **bad)
    with pytest.raises(smoothcache.AdapterError, match="no adapter matches"):
        Schedule.uniform(10, 3, model=object())


def test_empty_and_non_dict():
    with pytest.raises(ScheduleError, match="at least one row"):
        Schedule.from_dict({})
    with pytest.raises(ScheduleError, match="must be a JSON object"):
        Schedule.from_dict([1, 0])  # type: ignore[arg-type]


def test_versioned_format_checks(tmp_path):
    good = Schedule.uniform(4, 2, ["attn"]).to_dict()
    with pytest.raises(ScheduleError, match="version 99 is not supported"):
        Schedule.from_dict({**good, "version": 99})
    with pytest.raises(ScheduleError, match="declares num_steps=5"):
        Schedule.from_dict({**good, "num_steps": 5})
    with pytest.raises(ScheduleError, match="expected format"):
        Schedule.from_dict({**good, "format": "other"})


def test_missing_corrupt_and_truncated_files(tmp_path):
    with pytest.raises(ScheduleFileError, match="does not exist"):
        Schedule.load(tmp_path / "nope.json")
    path = tmp_path / "s.json"
    Schedule.uniform(50, 2, ["attn", "mlp"]).save(path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ScheduleFileError, match=r"not valid JSON.*truncated"):
        Schedule.load(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(ScheduleFileError, match=r"cannot read|not valid JSON"):
        Schedule.load(path)
    path.write_text(json.dumps({"attn": [1, 0, 7]}))
    with pytest.raises(ScheduleFileError, match=r"s\.json.*only 0 \(reuse\) and 1"):
        Schedule.load(path)


def test_shipped_schedules_load_by_name():
    names = smoothcache.shipped_schedules()
    assert "dit-xl-2-256/ddim-50/alpha-0.18" in names
    for name in names:
        schedule = Schedule.shipped(name)
        assert set(schedule.rows) == {"attn", "mlp"}
        assert schedule.metadata["name"] == name
        assert schedule.num_steps == schedule.metadata["num_steps"]
    paper = Schedule.shipped("dit-xl-2-256/ddim-50/alpha-0.18")
    assert paper.metadata["alpha"] == 0.18
    assert paper.compute_fraction == pytest.approx(0.48)  # 24 of 50 steps, as in the paper
    fora = Schedule.shipped("dit-xl-2-256/ddim-50/fora-3")
    assert fora.rows == Schedule.uniform(50, 3, ["attn", "mlp"]).rows


def test_unknown_shipped_name_lists_the_known_ones():
    with pytest.raises(ScheduleError, match=r"(?s)no shipped schedule is named 'dit/x'.*ddim-50"):
        Schedule.shipped("dit/x")


def test_as_schedule_accepts_every_form(tmp_path):
    from smoothcache.schedule import as_schedule

    s = Schedule.uniform(4, 2, ["attn"])
    path = tmp_path / "x.json"
    s.save(path)
    for form in (s, {"attn": [1, 0, 1, 1]}, str(path), path):
        assert as_schedule(form).rows == s.rows
    assert as_schedule("dit-xl-2-256/ddim-30/fora-2").num_steps == 30
    with pytest.raises(ScheduleError, match="expected a Schedule"):
        as_schedule(42)  # type: ignore[arg-type]


def test_fingerprint_says_what_a_schedule_decides(tmp_path):
    """Issue #17: ranks compare fingerprints; metadata and key order do not change them, any
    changed flag or forecast order does, and a saved file keeps them."""
    base = Schedule.uniform(10, 3, ["attn", "mlp"])
    same = Schedule(rows=dict(reversed(list(base.rows.items()))), metadata={"other": 1})
    assert same.fingerprint() == base.fingerprint()
    flipped = Schedule(rows={**base.rows, "mlp": (1,) * 10})
    assert flipped.fingerprint() != base.fingerprint()
    assert base.forecasting(1).fingerprint() != base.fingerprint()
    base.forecasting(1).save(tmp_path / "s.json")
    loaded = Schedule.load(tmp_path / "s.json")
    assert loaded.fingerprint() == base.forecasting(1).fingerprint()
