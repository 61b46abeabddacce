"""launch/tpu.py train, its remote command run by a real `bash -c` on a stand-in TPU worker (a
fake home with a stub trainer; gcloud a stub that runs the command there): every argument one
word, secrets out of what is printed, the start-up check, reruns."""
import glob
import os
import shlex
import subprocess
import time

from launch_stubs import (NASTY, make_stub, never_the_real_gcloud_or_srun,  # noqa: F401
                          run_on_worker, trainer_argv, worker_home)
from test_launch import ZONE, command_payload, dry_run, tpu


def test_a_train_argument_with_shell_metacharacters_stays_one_word(capsys, tmp_path):
  nasty = [word.format(tmp=tmp_path) for word in NASTY]
  train_args = ["--config=configs/glm_10b.py", "--workdir=gs://b/run", *nasty]
  payload = command_payload(dry_run(capsys, "train", "--name=glm", ZONE, "--", *train_args))
  # As a POSIX shell splits it, every argument is exactly one word.
  words = shlex.split(payload)
  start = next(i for i in range(len(words)) if words[i - 1:i + 1] == ["-m", "glmjax.train"]) + 1
  assert words[start:start + len(train_args)] == train_args
  # And as bash really runs it on a worker: the trainer gets the words, nothing else runs.
  home = worker_home(tmp_path)
  (home / "victim").mkdir()
  result = run_on_worker(payload, home, tmp_path)
  assert result.returncode == 0, result.stderr
  assert trainer_argv(home) == ["-m", "glmjax.train", *train_args]
  assert not glob.glob(str(tmp_path / "pwned*")) and (home / "victim").is_dir()
  assert "trainer started" in result.stdout and "no process holds the TPU" in result.stdout


def test_the_trainer_does_not_start_when_a_step_before_it_fails(capsys, tmp_path):
  payload = command_payload(dry_run(capsys, "train", "--name=glm", ZONE, "--",
                                    "--config=configs/base.py", "--workdir=/tmp/run"))
  home = worker_home(tmp_path)
  (home / "glmjax" / "logs").write_text("a file where the log folder should be")
  result = run_on_worker(payload, home, tmp_path)
  assert result.returncode != 0 and "mkdir" in result.stderr
  time.sleep(0.3)
  assert not (home / "argv").exists() and "trainer started" not in result.stdout


def test_train_fails_with_the_end_of_the_log_when_a_trainer_dies_during_the_check(
    capfd, monkeypatch, tmp_path):
  home = worker_home(tmp_path)
  trainer = home / "glmjax" / "venv" / "bin" / "python"
  make_stub(str(trainer), 'echo "Loading the tokenizer"; echo "FileNotFoundError: '
            '/mnt/gcs/tokenizer.json" >&2; exit 1')
  # gcloud runs the command on one fake worker, as its ssh would.
  make_stub(str(tmp_path / "bin" / "gcloud"),
            'for a in "$@"; do case "$a" in --command=*) command=${a#--command=};; esac; done; '
            f'HOME={shlex.quote(str(home))} exec bash -c "$command"')
  monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
  train = ["train", "--name=glm", ZONE, "--check-s=5", "--", "--config=c.py",
           "--workdir=gs://b/r"]
  assert tpu.main(train) == 1
  err = capfd.readouterr().err
  assert ": the trainer exited with status 1 within 5 s; the end of ~/glmjax/logs/train.log:" in err
  assert "Loading the tokenizer\nFileNotFoundError: /mnt/gcs/tokenizer.json" in err
  # A trainer still running after the check is a success.
  make_stub(str(trainer), 'echo $$ > "$HOME/trainer.pid"; exec sleep 60')
  try:
    assert tpu.main(train[:3] + ["--check-s=1"] + train[4:]) == 0
    captured = capfd.readouterr()
    assert "trainer started" in captured.out and "exited with status 1" not in captured.err
  finally:
    os.kill(int((home / "trainer.pid").read_text()), 15)


def _running(pid: int) -> bool:
  """Alive and not a zombie (nothing may reap a detached trainer here)."""
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError:
    return False


def test_rerunning_train_stops_the_trainer_it_started_before(capfd, monkeypatch, tmp_path):
  # A trainer waiting in jax.distributed for a dead peer holds no chip, so lsof misses it.
  home = worker_home(tmp_path)
  make_stub(str(home / "glmjax" / "venv" / "bin" / "python"),
            'echo $$ >> "$HOME/trainers"; exec bash -c "exec -a \\"python -m glmjax.train\\" '
            'sleep 60"')
  make_stub(str(tmp_path / "bin" / "gcloud"),
            'for a in "$@"; do case "$a" in --command=*) command=${a#--command=};; esac; done; '
            f'HOME={shlex.quote(str(home))} exec bash -c "$command"')
  monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
  train = ["train", "--name=glm", ZONE, "--check-s=1", "--grace=5", "--", "--config=c.py",
           "--workdir=gs://b/r"]
  pids = []
  try:
    assert tpu.main(train) == 0
    assert tpu.main(train) == 0  # the rerun after a fix
    pids = [int(line) for line in (home / "trainers").read_text().split()]
    assert len(pids) == 2 and not _running(pids[0]) and _running(pids[1])
    assert f"TERM the previous trainer ({pids[0]})" in capfd.readouterr().out
  finally:
    for pid in pids:
      if _running(pid):
        os.kill(pid, 9)


def _gcloud_on_one_worker(monkeypatch, tmp_path, home) -> None:
  """gcloud as a stand-in: records every argv; scp copies into the fake home, keeping the mode and
  noting it; ssh runs the command there, as its ssh would."""
  calls, modes = shlex.quote(str(tmp_path / "calls")), shlex.quote(str(tmp_path / "modes"))
  make_stub(str(tmp_path / "bin" / "gcloud"),
            f'for a in "$@"; do printf "%s\\0" "$a"; done >> {calls}; echo >> {calls}; '
            'case "$4" in '
            f'scp) stat -c %a "$5" >> {modes}; cp -p "$5" {shlex.quote(str(home))}/"${{6#*:}}";; '
            'ssh) for a in "$@"; do case "$a" in --command=*) command=${a#--command=};; esac; '
            f'done; HOME={shlex.quote(str(home))} exec bash -c "$command";; esac')
  monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")


def test_a_forwarded_variable_reaches_the_trainer_in_a_private_file_never_on_a_command_line(
    capsys, monkeypatch, tmp_path):
  secret = f"hf_S3CRET value;$(touch {tmp_path}/pwned)\nline 2"
  monkeypatch.setenv("HF_TOKEN", secret)
  out = dry_run(capsys, "train", "--name=glm", ZONE, "--env", "HF_TOKEN", "--",
                "--config=c.py", "--workdir=gs://b/r")
  assert "HF_TOKEN" in out and "S3CRET" not in out
  home = worker_home(tmp_path)
  _gcloud_on_one_worker(monkeypatch, tmp_path, home)
  monkeypatch.setattr(tpu.tempfile, "tempdir", str(tmp_path / "local"))
  (tmp_path / "local").mkdir()
  assert tpu.main(["train", "--name=glm", ZONE, "--check-s=0", "--env", "HF_TOKEN", "--",
                   "--config=c.py", "--workdir=gs://b/r"]) == 0
  captured = capsys.readouterr()
  assert "S3CRET" not in captured.out + captured.err + (tmp_path / "calls").read_text()
  scp = [c for c in (tmp_path / "calls").read_text().split("\n") if "\0scp\0" in c]
  assert len(scp) == 1 and "\0--worker=all\0" in scp[0]  # one copy, to every worker
  assert (tmp_path / "modes").read_text().split() == ["600"]  # only the user could read it
  assert trainer_argv(home)[2:] == ["--config=c.py", "--workdir=gs://b/r"]
  assert (home / "env").read_text() == secret and not (tmp_path / "pwned").exists()
  # Neither copy outlives the start: the local file once copied, the worker's once read.
  assert not os.listdir(tmp_path / "local") and not (home / "glmjax" / "train.env").exists()


def test_a_start_that_fails_still_deletes_the_forwarded_variables(capfd, monkeypatch, tmp_path):
  monkeypatch.setenv("HF_TOKEN", "hf_S3CRET")
  home = worker_home(tmp_path)
  (home / "glmjax" / "venv" / "bin" / "python").unlink()  # setup never ran to the end
  _gcloud_on_one_worker(monkeypatch, tmp_path, home)
  assert tpu.main(["train", "--name=glm", ZONE, "--env", "HF_TOKEN", "--", "--config=c.py",
                   "--workdir=gs://b/r"]) == 1
  assert "run setup first" in capfd.readouterr().err
  assert not (home / "glmjax" / "train.env").exists()


def test_status_calls_a_stale_pid_file_s_other_process_not_running(tmp_path):
  # After a VM restart the pid file may name another process: status must not say "running".
  home = worker_home(tmp_path)
  (home / "glmjax" / "logs").mkdir()
  (home / "glmjax" / "logs" / "train.log").write_text("step 100 | loss 2.5\n")
  other = subprocess.Popen(["sleep", "30"])
  trainer = subprocess.Popen(["bash", "-c", 'exec -a "python -m glmjax.train" sleep 30'])
  try:
    for pid, state in ((other.pid, "not running"), (trainer.pid, "running")):
      (home / "glmjax" / "train.pid").write_text(f"{pid}\n")
      result = run_on_worker(tpu.REMOTE_STATUS, home, tmp_path)
      assert result.returncode == 0, result.stderr
      assert result.stdout.endswith(f": trainer {state} | step 100 | loss 2.5\n"), result.stdout
  finally:
    other.kill()
    trainer.kill()


def test_train_on_a_slice_never_set_up_says_so_when_the_variables_cannot_be_copied(
    capfd, monkeypatch, tmp_path):
  monkeypatch.setenv("HF_TOKEN", "hf_S3CRET")
  make_stub(str(tmp_path / "bin" / "gcloud"),  # scp fails: no ~/glmjax on the workers
            'case "$4" in scp) echo "scp: glmjax/train.env: No such file or directory" >&2; '
            'exit 1;; esac; exit 0')
  monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
  assert tpu.main(["train", "--name=glm", ZONE, "--env", "HF_TOKEN", "--", "--config=c.py",
                   "--workdir=gs://b/r"]) == 1
  err = capfd.readouterr().err
  assert "could not copy HF_TOKEN to the workers (exit 1); a new slice needs `setup` first" in err
  assert "S3CRET" not in err
