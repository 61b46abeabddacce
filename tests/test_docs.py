"""The documentation a user gets with the repository points only inside the repository."""
import glob
import os
import re

import ml_collections
import pytest

from glmjax import config as glm_config

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


TEST_REF = re.compile(r"(tests/[\w/]+\.py)?::(\w+)")


@pytest.mark.parametrize("doc", DOCS)
def test_every_test_the_docs_name_is_defined_in_the_file_they_name(doc):
  """`tests/FILE.py::name`, and `::name` after it on the same line (the same file), name a
  test function of that file: a test moved or renamed leaves the claim pointing at nothing."""
  missing = []
  for line in open(os.path.join(REPO, doc), encoding="utf-8"):
    path = None
    for match in TEST_REF.finditer(line):
      path = match.group(1) or path
      if path is None:
        continue
      with open(os.path.join(REPO, path), encoding="utf-8") as f:
        if not re.search(rf"^def {match.group(2)}\(", f.read(), re.M):
          missing.append(f"{path}::{match.group(2)}")
  assert not missing, f"{doc}: " + ", ".join(missing)


def test_the_readme_links_the_architecture_and_performance_docs():
  text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  assert "(docs/architecture.md)" in text and "(docs/performance.md)" in text


def _config_flags(text: str) -> list[str]:
  """The fields that `--config.a.b=` flags and `` `a.b=` `` settings in a text name."""
  sections = "|".join(glm_config.default_config().keys())
  pattern = re.compile(rf"--config\.([a-z_0-9.]+)=|`((?:{sections})\.[a-z_0-9.]+)=")
  return [m.group(1) or m.group(2) for m in pattern.finditer(text)]


def test_every_config_flag_the_docs_and_error_messages_give_names_a_config_field():
  config = glm_config.default_config()
  sources = DOCS + [os.path.relpath(p, REPO) for pattern in ("glmjax/**/*.py", "launch/*.py",
                                                            "launch/*.sh", "configs/*.py")
                    for p in glob.glob(os.path.join(REPO, pattern), recursive=True)]
  seen, unknown = 0, []
  for name in sources:
    for field in _config_flags(open(os.path.join(REPO, name), encoding="utf-8").read()):
      seen += 1
      node = config
      for part in field.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
          unknown.append(f"{name}: {field}")
          break
        node = node[part]
  assert seen > 100  # the pattern still finds the flags the docs give
  assert not unknown, unknown
