"""launch/gpu_wheels.sh: the wheels a GPU loan carries, fetched the way the loan installs them.

The script runs pip, which needs PyPI; here `python3` is a stand-in that records each call, so
what the script asks pip for is checked without a network."""
import os
import re
import stat
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(tmp_path, *args: str, cwd: str = REPO) -> tuple[subprocess.CompletedProcess,
                                                             list[list[str]]]:
  """`bash launch/gpu_wheels.sh ARGS` run from `cwd` with DEST=tmp_path/wheels: the result and
  the argument lists it passed to `python3 -m pip`."""
  record = tmp_path / "calls"
  fake = tmp_path / "bin" / "python3"
  fake.parent.mkdir(exist_ok=True)
  fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\0" "$@" >> {record}\n'
                  f'printf "\\n" >> {record}\n')
  fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
  env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}",
         "DEST": str(tmp_path / "wheels")}
  result = subprocess.run(["bash", os.path.join(REPO, "launch/gpu_wheels.sh"), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60, check=False)
  calls = ([line.strip("\0").split("\0") for line in record.read_text().splitlines() if line]
           if record.exists() else [])
  return result, calls


def pip_calls(tmp_path, *args: str, cwd: str = REPO) -> list[list[str]]:
  result, calls = run_script(tmp_path, *args, cwd=cwd)
  assert result.returncode == 0, result.stderr[-2000:]
  return calls


def test_the_loan_s_wheels_are_pinned_binaries_for_python_3_12_without_their_dependencies(
    tmp_path):
  download = next(call for call in pip_calls(tmp_path) if call[2] == "download")
  for flag in ("--no-deps", "--only-binary=:all:"):
    assert flag in download
  assert download[download.index("--python-version") + 1] == "3.12"
  assert download[download.index("--implementation") + 1] == "cp"
  platforms = [download[i + 1] for i, arg in enumerate(download) if arg == "--platform"]
  assert "manylinux_2_27_x86_64" in platforms  # the only wheel xprof ships
  assert all(platform.endswith("_x86_64") for platform in platforms)  # the GPU machines'
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
  assert build[build.index("-w") + 1] == str(tmp_path / "wheels")
  # a checkout named relative to where the script is started, though it runs from the repo
  local = tmp_path / "local"
  (local / "src" / "tokamax").mkdir(parents=True)
  build = next(call for call in pip_calls(local, "src/tokamax", cwd=str(local))
               if call[2] == "wheel")
  assert build[-1] == str(local / "src" / "tokamax")


def test_it_refuses_a_folder_that_already_holds_wheels_and_a_source_that_is_no_folder(
    tmp_path):
  # a wheel left from an earlier pin would travel beside the new one
  (tmp_path / "wheels").mkdir()
  (tmp_path / "wheels" / "pydantic-2.0-py3-none-any.whl").write_text("")
  result, calls = run_script(tmp_path)
  assert result.returncode == 2 and calls == []
  assert "already holds 1 wheels: remove them first" in result.stderr
  (tmp_path / "wheels" / "pydantic-2.0-py3-none-any.whl").unlink()
  # a bare name would make pip take tokamax from PyPI, whose release lacks the GPU kernel
  result, calls = run_script(tmp_path, "tokamax")
  assert result.returncode == 2 and calls == []
  assert "tokamax is not a folder" in result.stderr


def test_it_refuses_a_tokamax_checkout_at_another_commit(tmp_path):
  checkout = tmp_path / "tokamax"
  checkout.mkdir()
  git = lambda *args: subprocess.run(["git", "-C", str(checkout), *args], check=True,
                                     capture_output=True, text=True)
  git("init", "-q")
  git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x")
  head = git("rev-parse", "HEAD").stdout.strip()
  result, calls = run_script(tmp_path, str(checkout))
  assert result.returncode == 2 and calls == []
  assert f"is at commit {head}, not " in result.stderr


def test_a_build_that_cannot_reach_github_is_one_line_and_keeps_no_wheel(tmp_path):
  """Without a network pip printed a dozen lines of subprocess traces, and the wheels already
  downloaded stayed, so the next run refused to start until they were removed by hand."""
  fake = tmp_path / "bin" / "python3"
  fake.parent.mkdir()
  fake.write_text(  # `-m pip download ... -d DEST`: one wheel; `-m pip wheel`: git's failure
      '#!/usr/bin/env bash\n'
      'if [[ "$3" == download ]]; then touch "$DEST/einshape-1.0-py3-none-any.whl"; exit 0; fi\n'
      'echo "  error: subprocess-exited-with-error" >&2\n'
      'echo "      fatal: unable to access \'https://github.com/openxla/tokamax/\': Could not'
      ' resolve host: github.com" >&2\n'
      'echo "note: This error originates from a subprocess" >&2\n'
      'exit 1\n')
  fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
  env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}",
         "DEST": str(tmp_path / "wheels"), "TMPDIR": str(tmp_path)}
  result = subprocess.run(["bash", os.path.join(REPO, "launch/gpu_wheels.sh")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 1
  last = result.stderr.splitlines()[-1]
  assert last.startswith("gpu_wheels.sh: building tokamax from tokamax @ git+https://github.com/"
                         "openxla/tokamax@")
  assert "failed (fatal: unable to access 'https://github.com/openxla/tokamax/': Could not " \
         "resolve host: github.com); pip's output: " in last
  assert "subprocess" not in result.stderr  # pip's trace is in the log the line names
  assert list((tmp_path / "wheels").iterdir()) == []
