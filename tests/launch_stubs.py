"""Shared by the launch tests: stand-ins so that gcloud and srun never really run, and the
user arguments full of shell metacharacters that must each reach the trainer as one word."""
import os

import pytest

NASTY = ["--config.data.files=('a b;rm -rf ~/victim',)", "$(touch {tmp}/pwned1)",
         "`touch {tmp}/pwned2`", "it's \"quoted\" & ; | > {tmp}/pwned3", "two\nlines", "*"]


def make_stub(path, body: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write("#!/bin/sh\n" + body + "\n")
  os.chmod(path, 0o755)


@pytest.fixture(autouse=True)
def never_the_real_gcloud_or_srun(tmp_path_factory, monkeypatch):
  """Stand-ins that fail loudly come first on PATH; tests that execute put their own before."""
  guard = tmp_path_factory.mktemp("guard")
  for program in ("gcloud", "srun"):
    make_stub(str(guard / program), f'echo "the real {program} must not run in tests" >&2; exit 99')
  monkeypatch.setenv("PATH", f"{guard}:{os.environ['PATH']}")
