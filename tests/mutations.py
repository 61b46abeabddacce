"""python tests/mutations.py [--only=NAME,...] [--full] [--list]

A mutation check, run on demand (not by pytest: its name does not start with test_). Each entry
plants one realistic bug in a fresh copy of the project and runs the tests that should catch it
(`--full`: the whole suite); a bug that every one of those tests lets through is reported as
SURVIVED and the exit status is 1. Add an entry (tests/mutation_entries/, by area) when a claim
gets a test.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from mutation_entries import MUTATIONS, Mutation  # the table, tests/mutation_entries/

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 3600  # per pytest run; a hang is reported, not waited on forever


def _copy_project(destination: str) -> None:
  files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
  for name in files:
    if os.path.isfile(os.path.join(REPO, name)):
      os.makedirs(os.path.dirname(os.path.join(destination, name)), exist_ok=True)
      shutil.copy2(os.path.join(REPO, name), os.path.join(destination, name))


def plant(mutation: Mutation, root: str) -> None:
  path = os.path.join(root, mutation.path)
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if text.count(mutation.old) != 1:
    raise SystemExit(f"{mutation.name}: {mutation.path} has {text.count(mutation.old)} copies "
                     f"of the text to replace (need exactly 1); update tests/mutations.py.")
  with open(path, "w", encoding="utf-8") as f:
    f.write(text.replace(mutation.old, mutation.new))


def _pytest(root: str, targets: list[str]) -> int:
  """pytest's exit status: 0 passed, 1 some test failed; 2-5 (errors, no tests) are not a catch."""
  try:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           *targets], cwd=root, capture_output=True, text=True, check=False,
                          timeout=TIMEOUT_S).returncode
  except subprocess.TimeoutExpired:
    return -1


def caught(mutation: Mutation | None, targets: list[str]) -> tuple[int, float]:
  """(pytest's exit status, seconds) on a copy with `mutation` planted (None: unmutated)."""
  with tempfile.TemporaryDirectory(prefix="glmjax-mutant-") as root:
    _copy_project(root)
    if mutation is not None:
      plant(mutation, root)
    started = time.perf_counter()
    return _pytest(root, targets), time.perf_counter() - started


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", default="", help="comma-separated parts of mutation names")
  parser.add_argument("--full", action="store_true", help="run the whole suite per mutation")
  parser.add_argument("--list", action="store_true", help="list the mutations and stop")
  args = parser.parse_args(argv)
  chosen = [m for m in MUTATIONS
            if not args.only or any(part in m.name for part in args.only.split(","))]
  if args.list:
    for mutation in chosen:
      print(f"{mutation.name}  ({mutation.path}; caught by {', '.join(mutation.tests)})")
    return 0
  # The targets must pass as they are, or a failure would say nothing about a planted bug.
  targets = sorted({test for mutation in chosen for test in mutation.tests})
  status, seconds = caught(None, ["tests"] if args.full else targets)
  if status != 0:
    print(f"the tests fail (status {status}) with no bug planted: fix them first")
    return 2
  print(f"unmutated: the targets pass ({seconds:.0f} s)", flush=True)
  survived = []
  for mutation in chosen:
    status, seconds = caught(mutation, ["tests"] if args.full else list(mutation.tests))
    verdict = "caught  " if status == 1 else ("SURVIVED" if status == 0 else f"ERROR {status}")
    print(f"{verdict} {seconds:6.0f} s  {mutation.name}", flush=True)
    if status != 1:  # only a failing test counts; a crash or a timeout is not a catch
      survived.append(mutation.name)
  print(f"{len(chosen) - len(survived)} of {len(chosen)} planted bugs caught"
        + (f"; not caught: {', '.join(survived)}" if survived else ""))
  return 1 if survived else 0


if __name__ == "__main__":
  sys.exit(main())
