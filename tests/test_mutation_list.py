"""tests/mutations.py stays runnable: every planted bug replaces text its file holds once."""
import os
import re

import mutations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_planted_bug_names_text_that_its_file_holds_exactly_once():
  stale = []
  for mutation in mutations.MUTATIONS:
    with open(os.path.join(REPO, mutation.path), encoding="utf-8") as f:
      count = f.read().count(mutation.old)
    if count != 1:
      stale.append(f"{mutation.name}: {mutation.path} holds its text {count} times")
  assert not stale, "\n".join(stale)


def test_every_planted_bug_has_a_distinct_name_and_names_tests_that_exist():
  names = [mutation.name for mutation in mutations.MUTATIONS]
  assert len(names) == len(set(names))
  for mutation in mutations.MUTATIONS:
    for test in mutation.tests:
      path, _, node = test.partition("::")
      assert os.path.exists(os.path.join(REPO, path)), (mutation.name, test)
      if node:  # a test moved or renamed leaves an id that pytest would only report as missing
        with open(os.path.join(REPO, path), encoding="utf-8") as f:
          defined = re.search(rf"^def {re.escape(node.split('[')[0])}\(", f.read(), re.M)
        assert defined, (mutation.name, test)
