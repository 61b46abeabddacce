"""launch/gpu_wheels.sh: the wheels a GPU loan carries, fetched the way the loan installs them.

The script runs pip, which needs PyPI; here `python3` is a stand-in that records each call, so
what the script asks pip for is checked without a network."""
import os
import re
import stat
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pip_calls(tmp_path, *args: str) -> list[list[str]]:
  """The argument lists `bash launch/gpu_wheels.sh ARGS` passes to `python3 -m pip`."""
  record = tmp_path / "calls"
  fake = tmp_path / "bin" / "python3"
  fake.parent.mkdir()
  fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\0" "$@" >> {record}\nprintf "\\n" >> {record}\n')
  fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
  env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}",
         "DEST": str(tmp_path / "wheels")}
  result = subprocess.run(["bash", "launch/gpu_wheels.sh", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  return [line.strip("\0").split("\0") for line in record.read_text().splitlines() if line]


def test_the_loan_s_wheels_are_pinned_binaries_for_python_3_12_without_their_dependencies(
    tmp_path):
  download = next(call for call in pip_calls(tmp_path) if call[2] == "download")
  for flag in ("--no-deps", "--only-binary=:all:"):
    assert flag in download
  assert download[download.index("--python-version") + 1] == "3.12"
  assert download[download.index("-d") + 1] == str(tmp_path / "wheels")
  names = [arg for arg in download if "==" in arg]
  # glmjax's own needs beyond the GPU machine's image come first, then tokamax's
  assert names[:2] == ["ml_collections==1.1.0", "tensorboardX==2.6.5"]
  assert "typeguard==2.13.3" in names and "pydantic-core==2.50.5" in names
  # every one pinned and listed once: the loan installs with --no-index --no-deps, and two
  # versions of one package stop the whole install
  assert all(re.fullmatch(r"[\w.\-]+==[\w.]+", name) for name in names)
  assert len({name.split("==")[0].lower().replace("_", "-") for name in names}) == len(names)
  assert len(names) == len([arg for arg in download[download.index("-d") + 2:]])


def test_tokamax_is_built_from_the_commit_that_measure_gpu_names_or_from_a_given_checkout(
    tmp_path):
  commit = re.search(r"tokamax@([0-9a-f]{40})",
                     open(os.path.join(REPO, "launch/measure_gpu.sh")).read()).group(1)
  build = next(call for call in pip_calls(tmp_path) if call[2] == "wheel")
  assert build[-1] == f"tokamax @ git+https://github.com/openxla/tokamax@{commit}"
  assert "--no-deps" in build and "--ignore-requires-python" in build
  local = tmp_path / "local"
  local.mkdir()
  build = next(call for call in pip_calls(local, "/src/tokamax") if call[2] == "wheel")
  assert build[-1] == "/src/tokamax"
