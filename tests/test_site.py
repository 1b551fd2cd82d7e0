"""The built site in a real browser, with the network cut off: headless Chromium opens a chapter
served on 127.0.0.1 and must find theorem blocks, figures and typeset math (no raw TeX left)."""
import functools
import http.server
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
ARTIFACTS = ROOT / "tests" / "artifacts"
# Each chapter page, with the figures and statement blocks it must show at least.
# "cited": a name that appears on the page only through a resolved citation.
PAGES = {"chapters/contract-design.html": {"figures": 7, "statements": 10, "cited": "Galanti"},
         "chapters/rank-minimization.html": {"figures": 4, "statements": 6, "cited": "Galanti"},
         "chapters/speculative-inference.html": {"figures": 5, "statements": 10, "cited": "Leviathan"},
         "chapters/decision-tree-language-models.html": {"figures": 3, "statements": 5, "cited": "Eldan"},
         "chapters/collapse-and-transfer.html": {"figures": 4, "statements": 6, "cited": "Papyan"},
         "chapters/sparse-network-bounds.html": {"figures": 2, "statements": 7, "cited": "Mohri"},
         "chapters/canonical-representations.html": {"figures": 6, "statements": 5, "cited": "Radhakrishnan"}}


@pytest.fixture(scope="module")
def server():
    missing = [page for page in PAGES if not (SITE / page).exists()]
    if missing:
        pytest.fail(f"{missing} missing under {SITE}: build the book first (scripts/setup)")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SITE))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def chromium(*args, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("Chromium is not installed: scripts/setup installs Debian's chromium (apt-get install chromium)")
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-quic", f"--user-data-dir={tmp_path / 'profile'}",
               # Offline: every host but the local server is unresolvable.
               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
               "--virtual-time-budget=20000", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module", params=list(PAGES))
def page(request):
    return request.param


@pytest.fixture(scope="module")
def rendered(server, page, tmp_path_factory):
    return chromium("--dump-dom", f"{server}/{page}", tmp_path=tmp_path_factory.mktemp("chromium"))


def visible_text(dom: str) -> str:
    """The page's prose: without scripts, styles, code listings (which may hold TeX in plot labels)
    and MathJax's hidden MathML."""
    dom = re.sub(r"<(script|style|pre)\b.*?</\1>", " ", dom, flags=re.S)
    dom = re.sub(r"<mjx-assistive-mml.*?</mjx-assistive-mml>", " ", dom, flags=re.S)
    return re.sub(r"<[^>]+>", " ", dom)


def test_math_is_typeset_with_no_raw_tex_left(rendered):
    assert rendered.count("<mjx-container") >= 100, "MathJax did not typeset the page"
    text = visible_text(rendered)
    for raw in (r"\(", r"\)", r"\[", "$$", r"\frac", r"\beta"):
        assert raw not in text, f"raw TeX {raw!r} left on the page"
    assert "<mjx-merror" not in rendered, "MathJax reported a TeX error"


def test_theorems_proofs_and_references_render(rendered, page):
    statements = re.findall(r'class="proof (theorem|lemma|corollary|definition|proposition) admonition"', rendered)
    assert len(statements) >= PAGES[page]["statements"]
    assert re.search(r'class="proof admonition"', rendered), "no proof block"
    assert re.search(r"(Definition|Theorem|Lemma|Proposition|Corollary) [0-9]+", visible_text(rendered)), "not numbered"
    assert PAGES[page]["cited"] in visible_text(rendered), "citations did not resolve"


def test_figures_are_png_images_that_load(rendered, page):
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', rendered)
    assert len(images) >= PAGES[page]["figures"]
    assert all((SITE / "chapters" / image).resolve().exists() for image in images)


def test_screenshot_of_the_chapter(server, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "contract-design.png"
    shot.unlink(missing_ok=True)
    chromium(f"--screenshot={shot}", "--window-size=1280,2400", f"{server}/chapters/contract-design.html", tmp_path=tmp_path)
    assert shot.exists() and shot.stat().st_size > 50_000


def test_each_chapter_shows_its_full_profile_box_rendered(rendered):
    text = visible_text(rendered)
    assert re.search(r"The\s+full\s+profile", text) and "What it runs." in text and "At full scale." in text
    assert ":::" not in text and "{admonition}" not in text  # the Markdown output was parsed as MyST


def test_executions_page_says_what_built_the_book_and_each_chapters_runs(server, tmp_path):
    text = visible_text(chromium("--dump-dom", f"{server}/executions.html", tmp_path=tmp_path))
    assert "This copy of the book was built from commit" in text and "Python 3.11" in text
    for page in PAGES:
        assert page.split("/")[1].removesuffix(".html") in text
    assert text.count("all passed") == len(PAGES)
    assert "not yet run at full scale" in text or "seed(s) on" in text
