"""The README and docs/: every relative link leads to a file, and the README stays short.

The README is the user's first screen (what it is, quick start, commands, today's results,
serving, notebooks, layout, links); the long versions live in docs/, so a link that breaks
when a section moves would strand a reader.
"""

import re

import pytest

from conftest import PROJECT_ROOT

DOCUMENTS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
# [text](target) or ![alt](target), the target up to a space or the closing parenthesis.
LINK = re.compile(r"\]\(([^)\s]+)\)")
README_MAX_LINES = 250


def relative_targets(document) -> list[str]:
    targets = LINK.findall(document.read_text(encoding="utf-8"))
    return [t for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_relative_link_leads_to_a_file(document):
    missing = [target for target in relative_targets(document)
               if not (document.parent / target.split("#")[0]).exists()]
    assert not missing, f"{document.name} links to missing files: {missing}"


def test_the_readme_is_short_and_links_every_document():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    for document in DOCUMENTS[1:]:
        assert f"docs/{document.name}" in readme, f"the README does not link {document.name}"
