"""The bibliography: every entry of references.bib links to its arXiv page, DOI or a URL, and on the
built site (_ext/bib_style.py) each entry's label is the author-year text the chapters cite it by,
with a, b, ... telling apart entries of one author and year, in the text as on the bibliography page."""
import re
from collections import defaultdict
from pathlib import Path

import pybtex.database
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIB = ROOT / "references.bib"
SITE = ROOT / "_build" / "html"
LABEL = re.compile(r"^(?P<authors>.+), (?P<year>\d{4}|n\.d\.)(?P<suffix>[a-z]?)$")


def _entries():
    return pybtex.database.parse_file(str(BIB)).entries


def test_every_entry_has_an_arxiv_id_doi_or_url():
    missing = [key for key, entry in _entries().items()
               if not {"eprint", "doi", "url"} & {name.lower() for name in entry.fields}]
    assert not missing, f"entries without eprint, doi or url: {missing}"


def test_identifiers_are_well_formed():
    for key, entry in _entries().items():
        fields = {name.lower(): value for name, value in entry.fields.items()}
        if "eprint" in fields:
            assert fields.get("archiveprefix") == "arXiv", key
            assert re.fullmatch(r"\d{4}\.\d{4,5}", fields["eprint"]), (key, fields["eprint"])
        if "doi" in fields:
            assert re.fullmatch(r"10\.\d{4,9}/\S+", fields["doi"]), (key, fields["doi"])
        if "url" in fields:
            assert fields["url"].startswith("https://"), (key, fields["url"])
        # an arXiv id belongs in eprint, where the bibliography turns it into a link
        assert not re.search(r"arXiv:\d", fields.get("note", "") + fields.get("journal", "")), key


def _text(node) -> str:
    return " ".join(node.get_text("").split())


@pytest.fixture(scope="module")
def bibliography():
    """{citation id: label} of the built bibliography page, and {label: [http links]}."""
    page = SITE / "bibliography.html"
    if not page.exists():
        pytest.skip(f"{page} is not built: run `jupyter-book build .` first")
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
    labels, links = {}, {}
    for citation in soup.select("div.citation"):
        label = _text(citation.select_one("span.label")).strip("[]")
        labels[citation["id"]] = label
        links[label] = [a["href"] for a in citation.select("a[href]") if a["href"].startswith("http")]
    return labels, links


def test_every_built_entry_links_out(bibliography):
    labels, links = bibliography
    assert len(labels) == len(_entries())
    assert not [label for label, hrefs in links.items() if not hrefs]


def test_labels_are_author_year_with_distinct_suffixes(bibliography):
    labels, _ = bibliography
    assert len(set(labels.values())) == len(labels), "two entries share a label"
    groups = defaultdict(list)
    for label in labels.values():
        match = LABEL.match(label)
        assert match, f"label {label!r} is not 'Author, Year'"
        groups[match["authors"], match["year"]].append(match["suffix"])
    for (authors, year), suffixes in groups.items():
        if len(suffixes) > 1:
            assert sorted(suffixes) == [chr(ord("a") + i) for i in range(len(suffixes))], (authors, year, suffixes)
        else:
            assert suffixes == [""], (authors, year, suffixes)


def test_citations_in_the_text_carry_the_bibliography_label(bibliography):
    """A parenthetical citation's link reads exactly the label ("Galanti et al., 2025a"); a textual
    one ("Luthra et al. [2026]") links the year, suffix included, after the label's authors."""
    from bs4 import BeautifulSoup

    labels, _ = bibliography
    checked = 0
    for page in sorted((SITE / "chapters").glob("*.html")):
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        for span in soup.select("span.bibtex-citation"):
            for link in span.select("a[href*='bibliography.html#']"):
                label = labels[link["href"].split("#", 1)[1]]
                authors, year = label.rsplit(", ", 1)
                shown = _text(link)
                assert shown in (label, year), (page.name, shown, label)
                if shown == year:
                    assert _text(span).startswith(authors), (page.name, _text(span), label)
                checked += 1
    assert checked > 40
