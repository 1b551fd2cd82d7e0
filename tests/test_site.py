"""The built site in a real browser, with the network cut off: headless Chromium opens a chapter
served on 127.0.0.1 and must find theorem blocks, figures and typeset math (no raw TeX left)."""
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


# A page shown in a frame of a given width: headless Chromium's window is at least 500 px wide, so a
# phone's 390 px viewport is the frame's. The frame's overflow report is copied out for --dump-dom.
FRAME = """<!doctype html><html><body style="margin:0">
<iframe id="frame" src="/{page}?measure-overflow" style="width:{width}px;height:900px;border:0"></iframe>
<script>
const poll = setInterval(function () {{
  const inner = document.getElementById("frame").contentDocument;
  const report = inner && inner.getElementById("overflow-report");
  if (!report) return;
  clearInterval(poll);
  const out = document.createElement("pre");
  out.id = "overflow-report";
  out.textContent = report.textContent;
  document.body.appendChild(out);
}}, 100);
</script></body></html>"""


class SiteHandler(http.server.SimpleHTTPRequestHandler):
    """The built site, plus ``/__frame__/WIDTH/PAGE``: PAGE in a frame WIDTH pixels wide."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(SITE), **kwargs)

    def do_GET(self):
        if not self.path.startswith("/__frame__/"):
            return super().do_GET()
        width, page = self.path.removeprefix("/__frame__/").split("/", 1)
        body = FRAME.format(page=page, width=int(width)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test log quiet
        pass


@pytest.fixture(scope="module")
def server():
    missing = [page for page in PAGES if not (SITE / page).exists()]
    if missing:
        pytest.fail(f"{missing} missing under {SITE}: build the book first (scripts/setup)")
    handler = SiteHandler
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


def overflow_report(server, page, width, tmp_path) -> dict:
    """What ``_static/measure-overflow.js`` finds on ``page`` at a ``width``-pixel window: the formulas
    wider than their text column (display and inline), those clipped with no scroll bar (lost), and
    how far the page itself scrolls sideways."""
    import html
    import json

    dom = chromium(f"--window-size={width + 50},950", "--dump-dom", f"{server}/__frame__/{width}/{page}",
                   tmp_path=tmp_path)
    found = re.search(r'<pre id="overflow-report">(.*?)</pre>', dom, flags=re.S)
    assert found, f"{page}: no overflow report (MathJax did not finish, or the script is not loaded)"
    return json.loads(html.unescape(found.group(1)))


def test_formulas_fit_the_column_on_a_desktop(server, page, tmp_path):
    report = overflow_report(server, page, 1400, tmp_path)
    assert report["page"] == 0
    assert report["lost"] == []
    assert report["displays"] == [] and report["inline"] == [], report


def test_no_formula_is_cut_on_a_phone(server, page, tmp_path):
    """At 390 px a long formula may scroll inside its own box (MathJax 3 does not break lines), but no
    content is clipped and the page does not scroll sideways."""
    report = overflow_report(server, page, 390, tmp_path)
    assert report["page"] == 0, report
    assert report["lost"] == [], report


def test_the_pdf_holds_the_whole_book_with_typeset_math():
    """``scripts/book-pdf`` (run by ``scripts/setup``): every chapter's title in the PDF, no raw TeX left
    (MathJax typeset every formula before printing), and a page with a theorem box saved as an image
    (tests/artifacts/book-pdf-page.png) whose ink covers a plausible share of the page."""
    import pypdfium2

    path = SITE / "book.pdf"
    assert path.exists(), "no _build/html/book.pdf: run scripts/book-pdf (scripts/setup does)"
    pdf = pypdfium2.PdfDocument(str(path))
    pages = [" ".join(pdf[k].get_textpage().get_text_range().split()) for k in range(len(pdf))]
    text = " ".join(pages)
    titles = [next(line[2:].strip() for line in (ROOT / "chapters" / f"{Path(page).stem}.md")
                   .read_text(encoding="utf-8").splitlines() if line.startswith("# "))
              for page in PAGES]
    missing = [title for title in titles if " ".join(title.split()) not in text]
    assert not missing, f"chapters missing from the PDF: {missing}"
    assert len(pdf) > 100
    assert not re.search(r"\\(frac|begin|mathbb|sum_)|\$\$", text), "raw TeX in the PDF"
    page = next(k for k, words in enumerate(pages) if "Theorem 1.1" in words)
    image = pdf[page].render(scale=1.5).to_pil().convert("L")
    ARTIFACTS.mkdir(exist_ok=True)
    image.save(ARTIFACTS / "book-pdf-page.png")
    ink = sum(image.histogram()[:128]) / (image.width * image.height)  # share of dark pixels
    assert 0.005 < ink < 0.5, ink


def test_the_home_page_links_the_pdf_and_the_notation(server, tmp_path):
    dom = chromium("--dump-dom", f"{server}/intro.html", tmp_path=tmp_path)
    assert 'href="book.pdf"' in dom and "notation.html" in dom and "prf-prf.html" in dom


CHAPTER_NUMBERS = {page: k + 1 for k, page in enumerate(
    ["chapters/rank-minimization.html", "chapters/collapse-and-transfer.html",
     "chapters/canonical-representations.html", "chapters/sparse-network-bounds.html",
     "chapters/decision-tree-language-models.html", "chapters/speculative-inference.html",
     "chapters/contract-design.html"])}


def test_statements_equations_and_figures_are_numbered_in_their_chapter(rendered, page):
    """Theorem 6.2, equation (6.3), Figure 6.1: every number on a chapter's page starts with its
    chapter's number, and every figure is captioned and numbered, with alt text in words."""
    k = CHAPTER_NUMBERS[page]
    numbers = re.findall(r'<span class="caption-number">\s*([A-Za-z]+) ([\d.]+)', rendered)
    numbers += [("equation", n) for n in re.findall(r'<span class="eqno">\(([\d.]+)\)', rendered)]
    assert numbers, "no numbered statement"
    wrong = [(kind, n) for kind, n in numbers if not n.startswith(f"{k}.")]
    assert not wrong, wrong
    images = re.findall(r"<img\b[^>]*>", rendered)
    figures = re.findall(r"<figure\b.*?</figure>", rendered, flags=re.S)
    assert len(figures) >= PAGES[page]["figures"]
    for figure in figures:
        assert re.search(r'<span class="caption-number">\s*Figure ' + rf"{k}\.\d+", figure), figure[:300]
    for image in images:
        alt = re.search(r'alt="([^"]*)"', image)
        assert alt and len(alt.group(1)) > 20 and not re.fullmatch(r"[0-9a-f]{20,}\.png", alt.group(1)), image


def test_the_install_page_says_how_to_run_everything(server, tmp_path):
    import html

    dom = chromium("--dump-dom", f"{server}/running.html", tmp_path=tmp_path)
    dom = html.unescape(re.sub(r"<[^>]+>", "", dom))  # the commands sit in highlighted <pre> blocks
    for needed in ("scripts/setup", "pytest", "theorylab run", "--profile full", "papermill", "--smoke"):
        assert needed in dom, needed
