"""The documentation a user gets with the repository points only inside the repository."""
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", "launch/README.md"] + [
    os.path.join("docs", name) for name in sorted(os.listdir(os.path.join(REPO, "docs")))
    if name.endswith(".md")]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_is_a_file_of_the_repository(doc):
  text = open(os.path.join(REPO, doc), encoding="utf-8").read()
  assert "../shared" not in text and "shared/reference" not in text
  links = [link.split("#")[0] for link in LINK.findall(text)
           if "://" not in link and not link.startswith(("#", "mailto:"))]
  for link in links:
    target = os.path.normpath(os.path.join(REPO, os.path.dirname(doc), link))
    assert target.startswith(REPO + os.sep), f"{doc}: {link} leaves the repository"
    assert os.path.exists(target), f"{doc}: {link} does not exist"


def test_the_readme_links_the_architecture_and_performance_docs():
  text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  assert "(docs/architecture.md)" in text and "(docs/performance.md)" in text
