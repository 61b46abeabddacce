"""launch/tpu.py setup, run for real against stand-ins: what is shipped, the ssh key, the
parallel copies and installs, reruns.

gcloud is a stub script on PATH; the remote setup command runs through a real `bash -c` with
stub sudo, mountpoint and gcsfuse, the way the shell on a TPU worker would run it.
"""
import io
import os
import shlex
import subprocess
import sys
import tarfile

from launch_stubs import make_stub, never_the_real_gcloud_or_srun  # noqa: F401
from launch_stubs import run_on_worker
from test_launch import ZONE, command_payload, dry_run, tpu


def test_setup_ships_what_git_lists_and_never_an_ignored_venv_or_wheel_folder(
    capsys, monkeypatch, tmp_path):
  repo = tmp_path / "checkout"
  for path, text in {".gitignore": "/.venv/\n/.whl/\n__pycache__/\n", "requirements.txt": "jax\n",
                     "glmjax/train.py": "", "glmjax/new.py": "", "gone.py": "",
                     ".venv/bin/python": "", ".whl/jax.whl": "", "glmjax/__pycache__/x.pyc": ""
                     }.items():
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
  git = ["git", "-C", str(repo)]
  subprocess.run(git + ["init", "-q"], check=True)
  subprocess.run(git + ["add", ".gitignore", "requirements.txt", "glmjax/train.py", "gone.py"],
                 check=True)
  (repo / "gone.py").unlink()  # tracked, deleted in the work tree: not shipped, no error
  shipped = tmp_path / "shipped.tar.gz"
  # The stub gcloud keeps what scp would copy to the worker.
  make_stub(str(tmp_path / "bin" / "gcloud"),
            f'[ "$4" = scp ] && cp "$5" {shlex.quote(str(shipped))}; exit 0')
  monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
  monkeypatch.setattr(tpu, "REPO", str(repo))
  name = f"pack-test-{os.getpid()}"
  try:
    assert tpu.main(["setup", f"--name={name}", ZONE, "--workers=1",
                     f"--log-dir={tmp_path / 'logs'}"]) == 0
  finally:
    if os.path.exists(f"/tmp/glmjax-{name}.tar.gz"):
      os.remove(f"/tmp/glmjax-{name}.tar.gz")
  with tarfile.open(shipped) as archive:
    names = {os.path.normpath(member.name) for member in archive.getmembers() if member.isfile()}
  assert names == {".gitignore", "requirements.txt", "glmjax/train.py", "glmjax/new.py"}
  assert "git ls-files -co --exclude-standard" in capsys.readouterr().err


def test_setup_outside_a_git_work_tree_ships_the_folder_without_caches_logs_or_a_venv(
    capsys, monkeypatch, tmp_path):
  folder = tmp_path / "unpacked"
  for path in ("glmjax/train.py", "requirements.txt", ".venv/bin/python", "logs/run/setup.log",
               "glmjax/__pycache__/train.cpython-311.pyc", ".git/HEAD", "build/lib/x.py",
               "glmjax/logs.py", "glmjax/topology.pyc"):  # bytecode beside its source too
    (folder / path).parent.mkdir(parents=True, exist_ok=True)
    (folder / path).write_text("")
  monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above it either
  monkeypatch.setattr(tpu, "REPO", str(folder))
  assert "(not a git work tree)" in dry_run(capsys, "setup", "--name=glm", ZONE, "--workers=1")
  tpu.pack(tpu.Pack(str(tmp_path / "a.tar.gz")))
  with tarfile.open(tmp_path / "a.tar.gz") as archive:
    names = {os.path.normpath(member.name) for member in archive.getmembers() if member.isfile()}
  assert names == {"glmjax/train.py", "requirements.txt", "glmjax/logs.py"}


def test_the_first_setup_makes_the_ssh_key_once_before_the_parallel_copies(
    capsys, monkeypatch, tmp_path):
  home = tmp_path / "home"
  home.mkdir()
  # Like gcloud on a machine without ~/.ssh/google_compute_engine: every call that finds no key
  # runs ssh-keygen, and two at once collide.
  make_stub(str(tmp_path / "bin" / "gcloud"), """
if [ ! -f "$HOME/.ssh/google_compute_engine" ]; then
  mkdir "$HOME/keygen" 2>/dev/null || { echo "ssh-keygen collided with another gcloud"; exit 1; }
  echo keygen >> "$HOME/calls"; sleep 1
  mkdir -p "$HOME/.ssh"; touch "$HOME/.ssh/google_compute_engine"; rmdir "$HOME/keygen"
fi
echo "$4 $*" >> "$HOME/calls"
""")
  monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
  monkeypatch.setenv("HOME", str(home))
  monkeypatch.setattr(tpu, "pack", lambda step: None)
  assert tpu.main(["setup", "--name=glm", ZONE, "--workers=4",
                   f"--log-dir={tmp_path / 'logs'}"]) == 0, capsys.readouterr().out
  calls = (home / "calls").read_text().splitlines()
  assert calls[0] == "keygen" and calls.count("keygen") == 1
  assert calls[1] == "ssh compute tpus tpu-vm ssh glm --zone=us-east5-a --worker=0 --command=true"
  assert sorted(call.split()[0] for call in calls[2:]) == ["scp"] * 4 + ["ssh"] * 4


def test_rerunning_setup_on_a_live_mount_leaves_the_mount_alone_and_copies_the_new_code(
    capsys, tmp_path):
  payload = command_payload(dry_run(capsys, "setup", "--name=glm", ZONE, "--workers=1",
                                    "--jax-version=0.10.2", "--mount-bucket=my-bucket")
                            .splitlines()[4])
  home = tmp_path / "home"
  home.mkdir()
  bin_dir = tmp_path / "bin"
  # On a live gcsfuse mount root can neither stat (no allow_other) nor chown (read-only) it.
  make_stub(str(bin_dir / "sudo"), '[ -e "$HOME/mounted" ] && case "$*" in *mnt/gcs*) '
            'echo "sudo $*: Permission denied" >&2; exit 1;; esac; echo "$*" >> "$HOME/sudo.log"')
  make_stub(str(bin_dir / "mountpoint"), '[ -e "$HOME/mounted" ]')
  make_stub(str(bin_dir / "gcsfuse"), 'echo "$*" >> "$HOME/gcsfuse.log"; touch "$HOME/mounted"')
  venv_python = tmp_path / "venv-python"
  make_stub(str(venv_python), '[ "$1" = --version ] && echo Python 3.11.9; exit 0')
  make_stub(str(bin_dir / "python3.11"),
            f'mkdir -p "$3/bin" && cp {shlex.quote(str(venv_python))} "$3/bin/python"')

  def setup(code: str) -> subprocess.CompletedProcess:
    with tarfile.open(home / "glmjax.tar.gz", "w:gz") as archive:
      for name, text in (("requirements.txt", "jax\n"), ("code.py", code)):
        info = tarfile.TarInfo(name)
        info.size = len(text)
        archive.addfile(info, io.BytesIO(text.encode()))
    return subprocess.run(["bash", "-c", payload], capture_output=True, text=True, timeout=30,
                          env={"HOME": str(home), "USER": "me",
                               "PATH": f"{bin_dir}:{os.environ['PATH']}"}, check=False)

  first = setup("version = 1\n")
  assert first.returncode == 0, first.stderr
  assert (home / "sudo.log").read_text() == "mkdir -p /mnt/gcs\nchown me /mnt/gcs\n"
  second = setup("version = 2\n")  # step 6 again after a code change
  assert second.returncode == 0, second.stderr
  assert (home / "glmjax" / "code" / "code.py").read_text() == "version = 2\n"
  assert (home / "gcsfuse.log").read_text() == "--implicit-dirs -o ro my-bucket /mnt/gcs\n"


def test_setup_runs_every_worker_at_once_with_a_log_each_and_a_summary(
    capsys, monkeypatch, tmp_path):
  calls = tmp_path / "calls"
  calls.mkdir()
  # Each ssh waits until all four have started: the test passes only if they run concurrently.
  make_stub(str(tmp_path / "bin" / "gcloud"), f"""
calls={shlex.quote(str(calls))}
worker=$(printf '%s\\n' "$@" | sed -n 's/^--worker=//p')
verb=$4
case "$*" in *--command=true*) touch "$calls/key"; exit 0 ;; esac
touch "$calls/$verb-$worker"
if read -r typed 2>/dev/null; then echo "read the terminal's line: $typed"; exit 9; fi
if [ "$verb" = ssh ]; then
  for _ in $(seq 250); do [ "$(ls "$calls" | grep -c ^ssh-)" -ge 4 ] && break; sleep 0.02; done
  [ "$(ls "$calls" | grep -c ^ssh-)" -ge 4 ] || {{ echo "ssh ran alone"; exit 3; }}
  echo "worker $worker installed"
  [ "$worker" = 2 ] && exit 7
fi
exit 0""")
  monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
  monkeypatch.setattr(tpu, "pack", lambda step: None)  # packing: the first tests here
  logs = tmp_path / "logs"
  # A line typed at the terminal meanwhile is not for the eight gcloud processes: they get no
  # stdin (one that read it would take the user's input, or wait on it).
  typed, feed = os.pipe()
  os.write(feed, b"yes\n")
  os.close(feed)
  terminal = os.dup(0)
  os.dup2(typed, 0)
  try:
    code = tpu.main(["setup", "--name=glm", ZONE, "--workers=4", "--jax-version=0.10.2",
                     f"--log-dir={logs}"])
  finally:
    os.dup2(terminal, 0)
    os.close(terminal)
    os.close(typed)
  out = capsys.readouterr().out
  assert code == 7, out
  assert "worker 2: FAILED (exit 7)" in out and "setup: 3 of 4 worker(s) ok" in out
  for w in range(4):
    log = (logs / f"setup-worker{w}.log").read_text()
    assert f"worker {w} installed" in log and f"--worker={w}" in log
    # Each command's line heads its output: the copy, then the install and what it printed.
    assert log.index("+ gcloud compute tpus tpu-vm scp") < log.index(
        "+ gcloud compute tpus tpu-vm ssh") < log.index(f"worker {w} installed"), log
  assert sorted(os.listdir(calls)) == ["key"] + [f"{v}-{w}" for v in ("scp", "ssh")
                                                 for w in range(4)]


def test_setup_installs_once_and_skips_while_the_requirements_are_unchanged(capsys, tmp_path):
  payload = command_payload(dry_run(capsys, "setup", "--name=glm", ZONE, "--workers=1",
                                    "--jax-version=0.10.2").splitlines()[4])
  home = tmp_path / "home"
  home.mkdir()
  make_stub(str(tmp_path / "bin" / "sudo"), "exit 0")
  venv_python = tmp_path / "venv-python"  # what `python3.11 -m venv DIR` puts in DIR/bin
  make_stub(str(venv_python),
            '[ "$1" = --version ] && echo Python 3.11.9 && exit 0\necho "$@" >> "$HOME/pip.log"')
  make_stub(str(tmp_path / "bin" / "python3.11"),
            '[ "$1" = --version ] && echo Python 3.11.9 && exit 0\n'
            f'mkdir -p "$3/bin" && cp {shlex.quote(str(venv_python))} "$3/bin/python"')

  def setup(requirements: str) -> str:
    with tarfile.open(home / "glmjax.tar.gz", "w:gz") as archive:
      data = requirements.encode()
      info = tarfile.TarInfo("./requirements.txt")
      info.size = len(data)
      archive.addfile(info, io.BytesIO(data))
    result = run_on_worker(payload, home, tmp_path)
    assert result.returncode == 0, result.stderr
    return result.stdout

  assert setup("jax>=0.10\n").endswith(": installed\n")
  assert "install -q -r requirements.txt jax[tpu]==0.10.2" in (home / "pip.log").read_text()
  assert setup("jax>=0.10\n").endswith(": requirements unchanged, install skipped\n")
  assert len((home / "pip.log").read_text().splitlines()) == 2  # pip upgrade + install, once
  assert setup("jax>=0.10\nflax\n").endswith(": installed\n")
  assert (home / "glmjax" / "code" / "requirements.txt").read_text() == "jax>=0.10\nflax\n"
  # A venv left by another Python (an earlier setup's --python) is made anew and installed into.
  make_stub(str(home / "glmjax" / "venv" / "bin" / "python"),
            '[ "$1" = --version ] && echo Python 3.10.12 && exit 0')
  assert setup("jax>=0.10\nflax\n").endswith(": installed\n")
  assert "3.11.9" in subprocess.run([str(home / "glmjax" / "venv" / "bin" / "python"),
                                     "--version"], capture_output=True, text=True).stdout


def test_a_setup_whose_pack_fails_copies_nothing_and_leaves_no_half_archive(
    capsys, monkeypatch, tmp_path):
  repo = tmp_path / "checkout"
  repo.mkdir()
  (repo / "requirements.txt").write_text("jax\n")
  # A file git lists that is gone when tar reads it (deleted meanwhile): the pack fails midway.
  monkeypatch.setattr(tpu, "REPO", str(repo))
  monkeypatch.setattr(tpu, "checkout_files", lambda: ["requirements.txt", "vanished.py"])
  calls = tmp_path / "calls"
  make_stub(str(tmp_path / "bin" / "gcloud"), f'echo "$4" >> {shlex.quote(str(calls))}')
  monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
  name = f"pack-fails-{os.getpid()}"
  archive = f"/tmp/glmjax-{name}.tar.gz"
  try:
    assert tpu.main(["setup", f"--name={name}", ZONE, "--workers=2",
                     f"--log-dir={tmp_path / 'logs'}"]) == 1
    assert not os.path.exists(archive) and not os.path.exists(f"{archive}.part")
  finally:
    for path in (archive, f"{archive}.part"):
      if os.path.exists(path):
        os.remove(path)
  assert "cannot pack the checkout" in capsys.readouterr().err
  assert not calls.exists()  # no ssh key step, no copy, no install


def test_setup_run_again_writes_fresh_logs_into_the_log_folder_it_made_before(capsys, tmp_path):
  # Running setup again is how new code reaches the workers: the logs folder of the first run
  # is already there, and each worker's log holds this run's output, not the last one's.
  logs = str(tmp_path / "logs")
  for run in ("first", "second"):
    commands = {w: [["echo", f"{run} run on worker {w}"]] for w in range(2)}
    assert tpu.run_per_worker(tpu.PerWorker(commands, logs)) == 0
    for w in range(2):
      log = (tmp_path / "logs" / f"setup-worker{w}.log").read_text()
      assert log == f"+ echo '{run} run on worker {w}'\n{run} run on worker {w}\n", log
  assert "setup: 2 of 2 worker(s) ok" in capsys.readouterr().out


def test_setup_fails_when_a_worker_s_gcloud_is_killed_by_a_signal(capsys, tmp_path):
  # subprocess gives a signal's death as a negative status: max() of [0, -9] was 0, a success.
  commands = {0: [["true"]], 1: [["sh", "-c", "kill -9 $$"]], 2: [["true"]]}
  assert tpu.run_per_worker(tpu.PerWorker(commands, str(tmp_path / "logs"))) == 1
  assert "worker 1: FAILED (exit -9)" in capsys.readouterr().out


def _apt_worker(tmp_path, lock_held_for: int, install_error: str = ""):
  """A new worker without its Python (python3.99, on no test machine's PATH, as
  python3.11 is on no new TPU VM): apt-get fails on a held lock `lock_held_for` times, then
  installs, or fails its install with `install_error`; every sudo apt-get call is logged."""
  home = tmp_path / "home"
  home.mkdir()
  bin_dir = tmp_path / "bin"
  venv_python = tmp_path / "venv-python"
  make_stub(str(venv_python), '[ "$1" = --version ] && echo Python 3.99.0; exit 0')
  python = (f'#!/bin/sh\n[ "$1" = --version ] && echo Python 3.99.0 && exit 0\n'
            f'mkdir -p "$3/bin" && cp {shlex.quote(str(venv_python))} "$3/bin/python"')
  make_stub(str(bin_dir / "sudo"), (
      'echo "$*" >> "$HOME/apt.log"; n=$(wc -l < "$HOME/apt.log")\n'
      f'if [ "$n" -le {lock_held_for} ]; then echo "E: Could not get lock '
      '/var/lib/dpkg/lock-frontend" >&2; exit 100; fi\n'
      + (f'case "$*" in *install*) echo {shlex.quote(install_error)} >&2; exit 100;; esac\n'
         if install_error else "")
      + f'case "$*" in *install*) printf %s {shlex.quote(python)} > "{bin_dir}/python3.99"; '
      f'chmod +x "{bin_dir}/python3.99";; esac'))
  with tarfile.open(home / "glmjax.tar.gz", "w:gz") as archive:
    info = tarfile.TarInfo("requirements.txt")
    archive.addfile(info, io.BytesIO(b""))
  return home


def _setup_on_apt_worker(capsys, monkeypatch, tmp_path, lock_held_for: int, **worker):
  """setup's remote command for python3.99, run on `_apt_worker` with no wait between tries."""
  monkeypatch.setattr(sys.modules["tpu_remote"], "APT_RETRY_S", 0)
  payload = command_payload(dry_run(capsys, "setup", "--name=glm", ZONE, "--workers=1",
                                    "--jax-version=0.10.2", "--python=python3.99")
                            .splitlines()[4])
  home = _apt_worker(tmp_path, lock_held_for, **worker)
  return home, run_on_worker(payload, home, tmp_path)


def test_setup_on_a_new_vm_waits_while_its_first_upgrade_holds_apt_s_lock(
    capsys, monkeypatch, tmp_path):
  """A TPU VM's unattended upgrade holds apt's lock for minutes after boot; apt-get then fails
  at once, and setup failed on a slice it had just created."""
  home, result = _setup_on_apt_worker(capsys, monkeypatch, tmp_path, lock_held_for=3)
  assert result.returncode == 0, result.stderr
  calls = (home / "apt.log").read_text().splitlines()
  assert calls == ["apt-get -o DPkg::Lock::Timeout=60 update -qq"] * 4 + [
      "apt-get -o DPkg::Lock::Timeout=60 install -y -qq python3.99 python3.99-venv"]
  assert result.stderr.count("apt-get update: apt's lock is held (try ") == 3
  assert result.stderr.count("E: Could not get lock") == 3  # apt's own words, shown
  assert (home / "glmjax" / "venv" / "bin" / "python").exists()


def test_setup_stops_with_the_apt_command_named_when_the_lock_is_never_released(
    capsys, monkeypatch, tmp_path):
  monkeypatch.setattr(sys.modules["tpu_remote"], "APT_TRIES", 3)
  home, result = _setup_on_apt_worker(capsys, monkeypatch, tmp_path, lock_held_for=99)
  assert result.returncode != 0
  assert result.stderr.splitlines()[-1].endswith(
      ": apt-get update -qq failed 3 times: apt's lock stayed held")
  assert len((home / "apt.log").read_text().splitlines()) == 3
  assert not (home / "glmjax" / "venv").exists()


def test_setup_stops_at_once_on_an_apt_error_that_is_not_a_held_lock(
    capsys, monkeypatch, tmp_path):
  # A Python the image's package sources lack (--python=python3.12 on Ubuntu 22.04): trying it
  # 30 times over 5 minutes would only repeat apt's answer.
  home, result = _setup_on_apt_worker(capsys, monkeypatch, tmp_path, lock_held_for=0,
                                      install_error="E: Unable to locate package python3.99")
  assert result.returncode != 0
  assert result.stderr.splitlines()[-2:] == [
      "E: Unable to locate package python3.99",
      f"{os.uname().nodename}: apt-get install -y -qq python3.99 python3.99-venv failed"]
  assert len((home / "apt.log").read_text().splitlines()) == 2  # update, then install once
