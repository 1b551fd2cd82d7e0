"""Baselines with measured tolerances: the rule held against numpy, and comparison in a check cell."""
import json

import numpy as np
import pytest

from theorylab import baselines, cli, chapters, runtime

CHAPTER = "contract-design"


def runs_of(values_per_run):
    return [{"fit": {"slope": v, "ranks": [3, 4], "verdict": "ok", "seconds": 10.0 + i}}
            for i, v in enumerate(values_per_run)]


def test_tolerance_is_the_stated_multiple_of_the_sample_spread():
    values = [1.00, 1.02, 0.98, 1.01, 0.99, 1.00, 1.03]
    entry = baselines.derive(runs_of(values))["fit.slope"]
    assert entry["value"] == pytest.approx(np.mean(values))
    assert entry["spread"] == pytest.approx(np.std(values, ddof=1))
    widest = np.max(np.abs(np.array(values) - np.mean(values)))
    assert entry["tolerance"] == pytest.approx(max(baselines.SPREAD_MULTIPLE * np.std(values, ddof=1), 1.5 * widest))


def test_identical_runs_get_a_rounding_level_tolerance_and_text_must_match_exactly():
    entries = baselines.derive(runs_of([2.0, 2.0, 2.0]))
    assert entries["fit.slope"]["tolerance"] == pytest.approx(baselines.ROUNDING_FLOOR * 3)
    assert entries["fit.ranks[1]"]["tolerance"] < 1e-7 and entries["fit.verdict"] == {"exact": "ok"}


def test_a_quantity_undefined_in_every_run_must_stay_undefined():
    entries = baselines.derive([{"b": {"t2": float("nan")}}] * 3)
    assert baselines.compare(entries, "b", {"t2": float("nan")}) == []
    assert "expected exactly nan" in baselines.compare(entries, "b", {"t2": 0.5})[0]


def test_timings_are_neither_stored_nor_compared():
    entries = baselines.derive(runs_of([1.0, 1.1]))
    assert "fit.seconds" not in entries
    assert baselines.compare(entries, "fit", {"slope": 1.05, "ranks": [3, 4], "verdict": "ok", "seconds": 1e6}) == []
    assert all(baselines.is_timing(name) for name in ("a.seconds", "a.target_ms[2]", "a.wall.x", "a.per_second"))
    assert not any(baselines.is_timing(name) for name in ("a.msd", "a.timeline_gap", "a.mse", "a.steps"))


@pytest.mark.parametrize("recorded,fragment", [
    ({"slope": 1.0 + 1.0, "ranks": [3, 4], "verdict": "ok"}, "fit.slope: 2, baseline 1.05"),
    ({"slope": 1.05, "ranks": [3, 5], "verdict": "ok"}, "fit.ranks[1]: 5"),
    ({"slope": 1.05, "ranks": [3, 4], "verdict": "no"}, "expected exactly 'ok'"),
    ({"slope": 1.05, "ranks": [3], "verdict": "ok"}, "fit.ranks[1]: in the baseline but not recorded"),
    ({"slope": 1.05, "ranks": [3, 4], "verdict": "ok", "new": 1}, "fit.new: recorded but not in the baseline"),
    ({"slope": float("nan"), "ranks": [3, 4], "verdict": "ok"}, "not a finite number"),
])
def test_compare_names_every_leaf_out_of_tolerance(recorded, fragment):
    entries = baselines.derive(runs_of([1.0, 1.1]))
    problems = baselines.compare(entries, "fit", recorded)
    assert len(problems) == 1 and fragment in problems[0]


def test_runs_recording_different_metrics_or_unequal_text_are_refused():
    with pytest.raises(ValueError, match="records other metrics"):
        baselines.derive([{"a": {"x": 1}}, {"a": {"y": 1}}])
    with pytest.raises(ValueError, match="differs between runs"):
        baselines.derive([{"a": {"x": "yes"}}, {"a": {"x": "no"}}])
    with pytest.raises(ValueError, match="at least 2"):
        baselines.derive([{"a": {"x": 1}}])


@pytest.fixture
def book(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    monkeypatch.setenv("THEORYLAB_BOOK_ROOT", str(tmp_path))
    monkeypatch.delenv(runtime.RUN_DIR_ENV, raising=False)
    monkeypatch.delenv(baselines.COMPARE_ENV, raising=False)  # the suite sets it for the chapters
    return tmp_path


def write_runs(folder, seeds, values, params=None):
    params = params or runtime.jsonable({k: v for k, v in runtime.resolve(CHAPTER, "ci", "cpu", 0).items()
                                         if k in chapters.chapter(CHAPTER).params})
    for seed, value in zip(seeds, values, strict=True):
        run = folder / f"s{seed}" / f"{CHAPTER}-ci"
        run.mkdir(parents=True)
        (run / "status.json").write_text(json.dumps({"status": "ok"}))
        (run / "metrics.json").write_text(json.dumps({"chapter": CHAPTER, "profile": "ci", "seed": seed,
                                                      "params": params, "checks": {"fit": {"slope": value}}}))
    return [str(folder / f"s{seed}") for seed in seeds]


def test_cli_writes_baselines_and_never_overwrites_without_force(book, capsys):
    folders = write_runs(book / "runs", [0, 1, 2], [1.0, 1.1, 0.9])
    assert cli.main(["baselines", CHAPTER, "--from", *folders]) == 0
    saved = json.loads(baselines.baseline_path(book, CHAPTER).read_text())
    assert saved["metrics"]["fit.slope"]["value"] == pytest.approx(1.0)
    assert [run["seed"] for run in saved["calibration_runs"]] == [0, 1, 2]
    assert cli.main(["baselines", CHAPTER, "--from", *folders]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert cli.main(["baselines", CHAPTER, "--from", *folders, "--force"]) == 0


def test_cli_refuses_runs_with_other_parameters_or_a_single_seed(book, capsys):
    other = write_runs(book / "other", [0, 1], [1.0, 1.1], params={"n_starts": 3})
    assert cli.main(["baselines", CHAPTER, "--from", *other]) == 2
    assert "other parameters than the ci profile's" in capsys.readouterr().err
    single = write_runs(book / "single", [5], [1.0])
    assert cli.main(["baselines", CHAPTER, "--from", *single]) == 2
    assert "fewer than 2 completed ci runs" in capsys.readouterr().err


def test_record_fails_the_check_cell_out_of_tolerance_only_when_comparing(book, monkeypatch):
    write_runs(book / "runs", [0, 1], [1.0, 1.1])
    baselines.write(book, CHAPTER, [json.loads((book / "runs" / f"s{s}" / f"{CHAPTER}-ci" / "metrics.json")
                                               .read_text()) for s in (0, 1)])
    cfg = runtime.configure("ci", "cpu", 7, chapter=CHAPTER)
    cfg.record("fit", slope=5.0)  # not comparing: recorded, never judged
    monkeypatch.setenv(baselines.COMPARE_ENV, "1")
    cfg.record("fit", slope=1.02)
    with pytest.raises(baselines.BaselineError, match=r"fit.slope: 5, baseline 1.05 \+- "):
        cfg.record("fit", slope=5.0)
    other = runtime.configure("ci", "cpu", 0, chapter=CHAPTER, n_starts=3)
    other.record("fit", slope=5.0)  # other knobs than ci: the baseline does not apply


def test_ci_profile_stays_on_the_cpu_whatever_the_hardware():
    assert runtime.resolve(CHAPTER, "ci", "auto")["device"] == "cpu"


def test_seed_spread_reports_mean_sd_and_range_of_the_calibration_runs(book):
    write_runs(book / "runs", [0, 1, 2], [1.0, 1.2, 1.1])
    runs = [json.loads((book / "runs" / f"s{s}" / f"{CHAPTER}-ci" / "metrics.json").read_text()) for s in (0, 1, 2)]
    cfg = runtime.configure("ci", "cpu", 0, chapter=CHAPTER)
    assert "no calibration runs yet" in cfg.seed_spread({"slope": "fit.slope"})
    baselines.write(book, CHAPTER, runs)
    text = cfg.seed_spread({"slope": "fit.slope"})
    assert "over 3 calibration runs (seeds 0, 1, 2" in text and "slope: 1.1 ± 0.1 [1, 1.2]" in text
    with pytest.raises(KeyError, match="no recorded number 'fit.other'"):
        cfg.seed_spread({"x": "fit.other"})
