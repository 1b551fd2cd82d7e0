"""Invariants of every chapter: the .md/.ipynb pair holds the same code, the committed notebook was
executed top to bottom from the current sources without errors, it is parameterised for papermill,
and its ci profile fits the 90-second budget. nbval (run by the same pytest command) then re-executes
each notebook and compares its outputs."""
import re
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

from theorylab import baselines, chapters, cli, data

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(chapters.CHAPTERS.values(), key=lambda spec: spec.name)
CI_BUDGET_SECONDS = 90


def code_sources(notebook):
    return [cell.source.strip() for cell in notebook.cells if cell.cell_type == "code"]


@pytest.fixture(params=CHAPTERS, ids=lambda spec: spec.name)
def chapter(request):
    spec = request.param
    path = ROOT / spec.notebook
    return spec, path, nbformat.read(path, as_version=4)


def test_every_chapter_is_in_the_table_of_contents_and_vice_versa():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = {entry["file"] for part in toc["parts"] for entry in part["chapters"]}
    listed = {f for f in files if f.startswith("chapters/")}
    assert listed == {str(Path(spec.notebook).with_suffix("")) for spec in CHAPTERS}


def test_markdown_and_notebook_hold_the_same_code(chapter):
    spec, path, notebook = chapter
    paired = jupytext.read(path.with_suffix(".md"))
    assert code_sources(paired) == code_sources(notebook), "run `theorylab refresh` to sync the pair"


def test_notebook_holds_the_sources_tags_and_figure_metadata(chapter):
    """The page is built from the .ipynb: its folding tags and figure captions must be the .md's."""
    _, path, notebook = chapter
    paired = jupytext.read(path.with_suffix(".md"))
    for key in cli.SYNCED_METADATA:
        assert [c.metadata.get(key) or None for c in paired.cells] == \
            [c.metadata.get(key) or None for c in notebook.cells], f"{key}: run `theorylab refresh`"


def test_notebook_was_executed_top_to_bottom_without_errors(chapter):
    _, _, notebook = chapter
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    outputs = [output for cell in code for output in cell.outputs]
    assert outputs, "a notebook with no outputs gives nbval nothing to compare"
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"], "stderr is compared text"
    assert not [o for o in outputs if "image/svg+xml" in o.get("data", {})], "draw PNG, not SVG"
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_notebook_outputs_come_from_the_current_sources(chapter):
    spec, path, notebook = chapter
    recorded = notebook.metadata.get("theorylab", {})
    assert recorded.get("success") is True and recorded.get("profile") == "ci"
    assert recorded.get("source_hash") == cli.page_hash(ROOT, path.with_suffix(".md")), (
        "the chapter or the package changed since the outputs were made: run `theorylab refresh`")


def test_ci_profile_fits_the_time_budget(chapter):
    _, _, notebook = chapter
    assert notebook.metadata["theorylab"]["seconds"] <= CI_BUDGET_SECONDS


def test_first_code_cell_is_the_parameters_cell_with_every_knob(chapter):
    spec, _, notebook = chapter
    first = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", [])
    namespace: dict = {}
    exec(first.source, namespace)  # the cell holds plain assignments
    knobs = {name: value for name, value in namespace.items() if not name.startswith("__")}
    assert knobs == {"profile": "ci", "device": "auto", "seed": 0, "smoke": False,
                     **{name: None for name in spec.params}}


def test_second_code_cell_validates_the_parameters_from_the_chapter_table(chapter):
    spec, _, notebook = chapter
    second = [cell for cell in notebook.cells if cell.cell_type == "code"][1]
    call = re.search(r"runtime\.from_notebook\(globals\(\), (\"[a-z-]+\"|chapter)\)", second.source)
    assert call, "the second cell configures the run from the parameters cell"
    assert call.group(1) in (f'"{spec.name}"', "chapter")


def test_every_chapter_has_a_baseline_calibrated_on_five_seeds_and_three_cpu_kernel_sets(chapter):
    spec, _, _ = chapter
    document = baselines.load(ROOT, spec.name)
    runs = document["calibration_runs"]
    assert {run["seed"] for run in runs} >= set(range(5))
    assert {str(run["cpu_capability"]).lower() for run in runs} >= {"default", "avx2"}
    assert document["metrics"], "a chapter with checks records numbers"


def test_every_chapter_shows_its_full_profile_box_from_the_table(chapter):
    spec, _, notebook = chapter
    sources = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    assert f'chapters.full_profile_box("{spec.name}")' in sources


@pytest.mark.parametrize("name", sorted(chapters.CHAPTERS))
def test_full_profile_box_says_what_runs_where_how_long_and_how(name):
    spec = chapters.chapter(name)
    text = chapters.full_profile_text(name)
    device = "cuda" if spec.gpu else "cpu"
    assert text.startswith(":::{admonition}") and text.endswith(":::")
    assert f"theorylab run {name} --profile full --device {device}" in text and "--smoke" in text
    minutes = spec.full_minutes
    assert (f"About {minutes:g} minutes" if minutes < 120 else f"About {minutes / 60:.2g} hours") in text
    assert ("(measured)" in text) == spec.full_measured and ("an estimate" in text) != spec.full_measured
    for key in spec.datasets:
        assert data.public_set(key).title in text


@pytest.mark.parametrize("name", sorted(chapters.CHAPTERS))
def test_headline_numbers_are_recorded_numbers_of_the_chapter(name):
    spec = chapters.chapter(name)
    assert spec.headline, "the box shows a few headline numbers beside a full run's"
    assert set(spec.headline) <= set(baselines.load(ROOT, name)["metrics"])


def test_code_fits_88_columns(chapter):
    """What a reader sees of the code does not scroll sideways: the linter on the chapter's cells."""
    import subprocess
    import sys

    _, path, _ = chapter
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run([str(ruff), "check", "--line-length", "88", "--select", "E501",
                             "--output-format", "concise", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_outputs_hold_no_object_reprs_or_nan(chapter):
    _, _, notebook = chapter
    found = []
    for k, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            text = output.get("text", "") + output.get("data", {}).get("text/plain", "")
            if "text/html" in output.get("data", {}) or "image/png" in output.get("data", {}):
                text = ""  # a figure's or a table's plain-text stand-in is not shown
            if re.search(r"<[\w.]+ (object )?at 0x[0-9a-f]+>|\bnan\b", text):
                found.append((k, text[:120]))
    assert not found, found


def test_every_figure_has_a_caption_a_name_and_alt_text(chapter):
    _, _, notebook = chapter
    missing = [k for k, cell in enumerate(notebook.cells) if cell.cell_type == "code"
               and any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
               and not all(cell.metadata.get("mystnb", {}).get(*key) for key in
                           [("figure", {}), ("image", {})])]
    assert not missing, f"figure cells without mystnb figure/image metadata: {missing}"
    for cell in notebook.cells:
        meta = cell.metadata.get("mystnb", {})
        if meta:
            assert meta["figure"].get("caption") and meta["figure"].get("name", "").startswith("fig-")
            assert len(meta["image"].get("alt", "")) > 20


def test_each_chapter_ends_with_three_exercises_one_computed(chapter):
    spec, path, _ = chapter
    text = path.with_suffix(".md").read_text(encoding="utf-8")
    exercises = re.findall(r"^:::\{exercise\}\n:label: (ex-[\w-]+)", text, flags=re.M)
    solved = set(re.findall(r"^:{3,4}\{solution(?:-start)?\} (ex-[\w-]+)", text, flags=re.M)) | set(
        re.findall(r"^`{4}\{solution-start\} (ex-[\w-]+)", text, flags=re.M))
    assert len(exercises) >= 3, exercises
    assert set(exercises) <= solved, set(exercises) - solved
    gated = re.findall(r"\{solution-start\}(.*?)\{solution-end\}", text, flags=re.S)
    computed = [block for block in gated if "{code-cell}" in block and "assert " in block]
    assert computed, "no exercise whose solution is an executed, asserting code cell"
