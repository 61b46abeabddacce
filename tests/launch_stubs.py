"""Shared by the launch tests: stand-ins so that gcloud and srun never really run, a stand-in TPU
worker to run remote commands on, and the user arguments full of shell metacharacters that must
each reach the trainer as one word."""
import os
import subprocess
import time

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


def worker_home(tmp_path):
  """A fake TPU worker home: checkout dir, venv python stub recording argv/env, no-op sudo."""
  home = tmp_path / "home"
  (home / "glmjax" / "code").mkdir(parents=True)
  make_stub(str(home / "glmjax" / "venv" / "bin" / "python"),
            'printf "%s\\0" "$@" > "$HOME/argv.part"; printf "%s" "${HF_TOKEN-unset}" > '
            '"$HOME/env"; mv "$HOME/argv.part" "$HOME/argv"')
  make_stub(str(tmp_path / "bin" / "sudo"), "exit 0")  # lsof finds no chip holders
  return home


def run_on_worker(payload: str, home, tmp_path) -> subprocess.CompletedProcess:
  env = {"HOME": str(home), "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
  return subprocess.run(["bash", "-c", payload], env=env, capture_output=True, text=True,
                        timeout=30, check=False)


def trainer_argv(home) -> list[str]:
  deadline = time.time() + 10
  while not (home / "argv").exists():  # the trainer starts in the background
    assert time.time() < deadline, "the stub trainer never started"
    time.sleep(0.02)
  return (home / "argv").read_text().split("\0")[:-1]
