"""Author-year bibliography whose labels are the citations the text shows.

The chapters cite with ``bibtex_reference_style: author_year_suffixed`` ("Galanti *et al.*, 2025a");
the bibliography page (``bibtex_default_style: theorylab``) labels each entry with the same words,
"Galanti et al., 2025a", sorts the entries by those author words, then year, then title, and ends each entry with
its link: ``eprint`` gives https://arxiv.org/abs/ID, ``doi`` gives https://doi.org/DOI, ``url`` the
address itself.

How the two agree: the label style below builds each label from the authors' last names (the
names template and separators of sphinxcontrib-bibtex's own author-year citations) and the year,
then gives every label shared by several entries a suffix a, b, ... in the sorted order. The
citation style reads its year back from that label (the ``formatted_entry`` every citation is
rendered with), so a suffix is written once, on the bibliography side, and the text cannot disagree.
"""
from __future__ import annotations

import string
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import pybtex.plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle as AuthorYearTitleSorting
from pybtex.style.template import join, node
from sphinxcontrib.bibtex.plugin import register_plugin as register_bibtex_plugin
from sphinxcontrib.bibtex.style.referencing import PersonStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle
from sphinxcontrib.bibtex.style.referencing.basic_author_year import (
    BasicAuthorYearParentheticalReferenceStyle,
    BasicAuthorYearTextualReferenceStyle,
)
from sphinxcontrib.bibtex.style.referencing.extra_author import ExtraAuthorReferenceStyle
from sphinxcontrib.bibtex.style.referencing.extra_empty import ExtraEmptyReferenceStyle
from sphinxcontrib.bibtex.style.referencing.extra_label import ExtraLabelReferenceStyle
from sphinxcontrib.bibtex.style.referencing.extra_year import ExtraYearReferenceStyle
from sphinxcontrib.bibtex.style.template import join2, post_text, pre_text, reference

STYLE_NAME = "theorylab"
REFERENCE_STYLE_NAME = "author_year_suffixed"
LABEL_YEAR_SEP = ", "


def _plain(latex: str) -> str:
    """A BibTeX field as plain text: ``Holmstr{\\"o}m`` -> ``Holmström``."""
    return Text.from_latex(latex).render_as("text")


# --------------------------------------------------------------------------------------------
# Bibliography side: labels, sorting, formatting
# --------------------------------------------------------------------------------------------


class AuthorYearLabelStyle(BaseLabelStyle):
    """Labels "Author, Year", "Author and Other, Year", "Author et al., Year", with a, b, ... after
    the year for entries that would otherwise share a label (in the order the entries are sorted)."""

    person = PersonStyle()

    def author_text(self, entry) -> str:
        """The authors exactly as an author-year citation in the text writes them."""
        template = self.person.author_or_editor_or_title(full=False)
        return template.format_data({"entry": entry, "style": self}).render_as("text")

    def base_label(self, entry) -> str:
        year = entry.fields.get("year", "n.d.")
        return f"{self.author_text(entry)}{LABEL_YEAR_SEP}{year}"

    def format_labels(self, sorted_entries: Iterable) -> list[str]:
        base = [self.base_label(entry) for entry in sorted_entries]
        counts = Counter(base)
        seen: defaultdict[str, int] = defaultdict(int)
        labels = []
        for label in base:
            if counts[label] > 1:
                labels.append(label + string.ascii_lowercase[seen[label]])
                seen[label] += 1
            else:
                labels.append(label)
        return labels


class AuthorYearSorting(AuthorYearTitleSorting):
    """By the label's author words ("Chen and Guestrin" before "Chen et al."), then year, then
    title, so entries with one label and year get their a, b, ... in title order."""

    labels = AuthorYearLabelStyle()

    def sorting_key(self, entry):
        author = self.labels.author_text(entry).lower()
        return (author, entry.fields.get("year", ""), _plain(entry.fields.get("title", "")).lower())


class Style(UnsrtStyle):
    """``unsrt`` entries (which end with their arXiv / DOI / URL link) under author-year labels,
    sorted by author then year."""

    default_label_style = AuthorYearLabelStyle
    default_sorting_style = AuthorYearSorting


# --------------------------------------------------------------------------------------------
# Citation side: the year (with its suffix) comes from the bibliography label
# --------------------------------------------------------------------------------------------


@node
def label_year(children, data):
    """The year part of the entry's bibliography label: "2025a" from "Galanti et al., 2025a"."""
    assert not children
    label = data["formatted_entry"].label
    return Text(label.rsplit(LABEL_YEAR_SEP, 1)[-1])


@dataclass
class _Parenthetical(BasicAuthorYearParentheticalReferenceStyle):
    def inner(self, role_name: str):
        return join2(sep1=self.pre_text_sep, sep2=self.post_text_sep)[
            pre_text,
            reference[
                join(sep=self.author_year_sep)[
                    self.person.author_or_editor_or_title(full="s" in role_name),
                    label_year,
                ]
            ],
            post_text,
        ]


@dataclass
class _Textual(BasicAuthorYearTextualReferenceStyle):
    def inner(self, role_name: str):
        return join(sep=self.text_reference_sep)[
            self.person.author_or_editor_or_title(full="s" in role_name),
            join[
                self.bracket.left,
                join2(sep1=self.pre_text_sep, sep2=self.post_text_sep)[
                    pre_text,
                    reference[label_year],
                    post_text,
                ],
                self.bracket.right,
            ],
        ]


@dataclass
class _Year(ExtraYearReferenceStyle):
    def inner(self, role_name: str):
        return reference[label_year]


@dataclass
class SuffixedAuthorYearReferenceStyle(AuthorYearReferenceStyle):
    """sphinxcontrib-bibtex's ``author_year`` with the year read from the bibliography label."""

    def __post_init__(self):
        self.styles.extend(
            [
                _Parenthetical(
                    bracket=self.bracket_parenthetical,
                    person=self.person,
                    author_year_sep=self.author_year_sep,
                    pre_text_sep=self.pre_text_sep,
                    post_text_sep=self.post_text_sep,
                ),
                _Textual(
                    bracket=self.bracket_textual,
                    person=self.person,
                    text_reference_sep=self.text_reference_sep,
                    pre_text_sep=self.pre_text_sep,
                    post_text_sep=self.post_text_sep,
                ),
                ExtraAuthorReferenceStyle(bracket=self.bracket_author, person=self.person),
                ExtraLabelReferenceStyle(bracket=self.bracket_label),
                _Year(bracket=self.bracket_year),
                ExtraEmptyReferenceStyle(),
            ]
        )
        # GroupReferenceStyle.__post_init__, skipping AuthorYearReferenceStyle's own list
        super(AuthorYearReferenceStyle, self).__post_init__()


def register() -> None:
    pybtex.plugin.register_plugin("pybtex.style.labels", STYLE_NAME, AuthorYearLabelStyle, force=True)
    pybtex.plugin.register_plugin("pybtex.style.sorting", STYLE_NAME, AuthorYearSorting, force=True)
    pybtex.plugin.register_plugin("pybtex.style.formatting", STYLE_NAME, Style, force=True)
    register_bibtex_plugin(
        "sphinxcontrib.bibtex.style.referencing",
        REFERENCE_STYLE_NAME,
        SuffixedAuthorYearReferenceStyle,
        force=True,
    )


register()


def setup(app):
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
