"""Published full results: the file's schema, publishing from runs and sweeps, the stale flag, and the
chapter box that shows them beside the ci numbers."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from theorylab import baselines, chapters, cli, results, runtime

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "contract-design"


def _fake_run(folder: Path, monkeypatch, seed=0, value=1.0, profile="full", status="ok", check="hm_recovery",
              **knobs):
    """A run folder as `theorylab run` leaves it: metrics.json written by Config.record, status.json."""
    folder.mkdir(parents=True)
    monkeypatch.delenv(baselines.COMPARE_ENV, raising=False)  # made-up numbers, not the page's
    monkeypatch.setenv(runtime.RUN_DIR_ENV, str(folder))
    monkeypatch.setenv(runtime.COMMAND_ENV, f"theorylab run {CHAPTER} --profile {profile}")
    config = runtime.configure(profile, "cpu", seed, chapter=CHAPTER, smoke=profile == "full", **knobs)
    config.record(check, worst_single_task=value, worst_multitask=value / 10, curve=[value, 2 * value])
    failure = "" if status == "ok" else "cell In [9] (`assert x`): AssertionError: x"
    (folder / "status.json").write_text(json.dumps({"chapter": CHAPTER, "status": status, "failure": failure}))
    monkeypatch.delenv(runtime.RUN_DIR_ENV)


@pytest.fixture
def book(tmp_path):
    """A copy of what the stale flag reads: the chapter, the package, the pins, the baseline."""
    root = tmp_path / "book"
    for part in ("chapters", "src/theorylab"):
        (root / part).mkdir(parents=True)
    shutil.copy(ROOT / "chapters" / f"{CHAPTER}.md", root / "chapters")
    shutil.copytree(ROOT / "chapters" / "baselines", root / "chapters" / "baselines")
    for source in (ROOT / "src" / "theorylab").glob("*.py"):
        shutil.copy(source, root / "src" / "theorylab")
    shutil.copy(ROOT / "requirements.txt", root)
    return root


def test_publish_one_run_writes_a_valid_document_with_provenance(tmp_path, monkeypatch):
    _fake_run(tmp_path / "run", monkeypatch)
    [target] = results.publish(tmp_path / "run", tmp_path / "book")
    document = json.loads(target.read_text())
    results.validate(document)
    assert target == tmp_path / "book" / "results" / "full" / f"{CHAPTER}.json"
    assert document["seeds"] == [0] and document["status"] == "ok" and document["smoke"] is True
    assert document["metrics"]["hm_recovery.worst_single_task"] == {"mean": 1.0, "std": None, "n": 1}
    provenance = document["provenance"]
    assert provenance["command"] == f"theorylab run {CHAPTER} --profile full" and provenance["device"] == "cpu"
    assert provenance["source_hash"] == cli.source_hash(ROOT, ROOT / "chapters" / f"{CHAPTER}.md")
    with pytest.raises(FileExistsError):
        results.publish(tmp_path / "run", tmp_path / "book")


def test_publish_a_sweep_aggregates_seeds_and_keeps_failures_visible(tmp_path, monkeypatch):
    for seed, value in enumerate([1.0, 3.0, 8.0]):
        _fake_run(tmp_path / "sweep" / f"s{seed}" / "run", monkeypatch, seed, value,
                  status="FAILED" if seed == 2 else "ok")
    document = results.collect(tmp_path / "sweep")
    entry = document["metrics"]["hm_recovery.curve[1]"]
    assert entry["n"] == 2 and entry["mean"] == pytest.approx(np.mean([2, 6]))  # the failed run left out
    assert entry["std"] == pytest.approx(np.std([2, 6], ddof=1))
    assert document["status"] == "FAILED" and "AssertionError" in document["failures"][0]
    assert document["seeds"] == [0, 1, 2]


def test_runs_at_two_parameter_points_are_not_averaged_together(tmp_path, monkeypatch):
    _fake_run(tmp_path / "sweep" / "a" / "run", monkeypatch, 0, 1.0)
    _fake_run(tmp_path / "sweep" / "b" / "run", monkeypatch, 0, 2.0, n_starts=3)
    with pytest.raises(ValueError, match="runs at 2 parameter points"):
        results.collect(tmp_path / "sweep")


def test_ci_runs_and_empty_folders_are_not_published(tmp_path, monkeypatch):
    _fake_run(tmp_path / "ci", monkeypatch, profile="ci")
    with pytest.raises(ValueError, match="only full-profile runs"):
        results.collect(tmp_path / "ci")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no theorylab run found"):
        results.collect(tmp_path / "empty")


@pytest.mark.parametrize("change,message", [
    (lambda d: d.pop("provenance"), "missing 'provenance'"),
    (lambda d: d.__setitem__("status", "maybe"), "status 'maybe'"),
    (lambda d: d["provenance"].pop("commit"), "provenance lacks ['commit']"),
    (lambda d: d["metrics"].__setitem__("x.y", 3.0), "metric 'x.y' needs mean, std and n"),
    (lambda d: d.__setitem__("seeds", "0"), "'seeds' is str, expected list"),
])
def test_schema_names_what_is_wrong(tmp_path, monkeypatch, change, message):
    _fake_run(tmp_path / "run", monkeypatch)
    document = results.collect(tmp_path / "run")
    change(document)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        results.validate(document)


def test_stale_when_the_chapter_changes_after_the_run(tmp_path, monkeypatch, book):
    monkeypatch.setenv("THEORYLAB_BOOK_ROOT", str(ROOT))
    _fake_run(tmp_path / "run", monkeypatch)
    document = results.collect(tmp_path / "run")
    document["provenance"]["source_hash"] = cli.source_hash(book, book / "chapters" / f"{CHAPTER}.md")
    assert not results.is_stale(book, document)
    markdown = book / "chapters" / f"{CHAPTER}.md"
    markdown.write_text(markdown.read_text() + "\nOne more sentence.\n")
    assert results.is_stale(book, document)


def test_box_shows_ci_beside_full_with_provenance_and_flags(tmp_path, monkeypatch, book):
    assert "Not yet run at full scale" in chapters.full_profile_text(CHAPTER, root=book)
    _fake_run(tmp_path / "run", monkeypatch, value=0.5)
    document = results.collect(tmp_path / "run")
    document["provenance"]["source_hash"] = cli.source_hash(book, book / "chapters" / f"{CHAPTER}.md")
    target = results.path(book, CHAPTER)
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(document))
    text = chapters.full_profile_text(CHAPTER, root=book)
    assert "1 seed(s) on" in text and "| number | ci (this page) | full |" in text
    assert "toy sizes" in text and "stale" not in text  # a smoke run says so
    leaf = "hm_recovery.worst_multitask"  # a headline number of the chapter
    assert leaf in chapters.chapter(CHAPTER).headline
    baseline = json.loads((book / "chapters" / "baselines" / f"{CHAPTER}.json").read_text())["metrics"][leaf]
    row = next(line for line in text.splitlines() if line.startswith(f"| `{leaf}`"))
    assert row == f"| `{leaf}` | {baseline['value']:.3g} ± {baseline['spread']:.2g} | 0.05 |"
    (book / "chapters" / f"{CHAPTER}.md").write_text("changed")
    assert "**stale**" in chapters.full_profile_text(CHAPTER, root=book)


def test_unknown_checks_names_metrics_the_chapter_never_records(tmp_path, monkeypatch):
    _fake_run(tmp_path / "run", monkeypatch, check="hm_recovery")
    document = results.collect(tmp_path / "run")
    assert results.unknown_checks(ROOT, document) == []
    document["metrics"]["no_such_check.value"] = {"mean": 1.0, "std": None, "n": 1}
    assert results.unknown_checks(ROOT, document) == ["no_such_check"]


PUBLISHED = sorted((ROOT / "results" / "full").glob("*.json"))


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: p.stem)
def test_every_published_result_is_valid_and_names_checks_of_its_chapter(path):
    document = json.loads(path.read_text())
    results.validate(document)
    assert document["chapter"] == path.stem and path.stem in chapters.CHAPTERS
    assert results.unknown_checks(ROOT, document) == []


def test_the_page_hash_follows_the_published_result(book):
    markdown = book / "chapters" / f"{CHAPTER}.md"
    before = cli.page_hash(book, markdown)
    target = results.path(book, CHAPTER)
    target.parent.mkdir(parents=True)
    target.write_text("{}")
    assert cli.page_hash(book, markdown) != before
