"""The shell commands launch/tpu.py runs on each TPU worker over `gcloud ... ssh --command=`.

Every value from the user is shlex-quoted before it goes in; `~` stays unquoted so that the
worker's shell expands it.
"""
from __future__ import annotations

import os
import shlex

# On every worker: ~/glmjax/{code,venv,logs}.
CODE, VENV_PYTHON, LOGS = "~/glmjax/code", "~/glmjax/venv/bin/python", "~/glmjax/logs"
TRAIN_LOG, PID_FILE, MARKER = f"{LOGS}/train.log", "~/glmjax/train.pid", "~/glmjax/installed"
ARCHIVE = "~/glmjax.tar.gz"
# The variables `train --env` forwards, copied over in a file only the user can read: a value
# on a command line would show in `ps` on the laptop and on every worker.
SECRETS = "~/glmjax/train.env"
LOG_TAIL_LINES = 20  # of a trainer that died during train's check: enough for a traceback

# Processes holding the chips: /dev/accel* (v4), /dev/vfio/* (v5e, v5p, v6e). TERM first (the
# trainer saves a checkpoint and exits), wait up to the grace period, then KILL what is left.
HOLDERS = "sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null | sort -u"
# Whether pid $p is a trainer: after a reboot the pid file's number may be another process.
TRAINER_ALIVE = 'ps -o args= -p "$p" 2>/dev/null | grep -q glmjax.train'
KILL_WAIT_S = 30  # a KILLed process can hold /dev/vfio for seconds: the next start would fail
# A fresh VM's unattended upgrade holds apt's locks for minutes after boot. `install` waits for
# dpkg's lock up to APT_LOCK_WAIT_S; `update` fails at once on its lists lock (the timeout is
# dpkg's only). So setup's apt steps try again while apt says a lock is held, and stop at once
# on any other error (a package the image's sources lack).
APT_TRIES, APT_RETRY_S, APT_LOCK_WAIT_S = 30, 10, 60
APT_LOCK_ERRORS = "Could not get lock|Unable to lock|Unable to acquire"


def stop_holders(grace_s: int) -> str:
  return (f'pids=$({HOLDERS}); if [ -n "$pids" ]; then echo "$(hostname): TERM" $pids; '
          f"sudo kill -TERM $pids || true; for _ in $(seq {int(grace_s)}); do "
          f'[ -z "$({HOLDERS})" ] && break; sleep 1; done; pids=$({HOLDERS}); '
          f'if [ -n "$pids" ]; then echo "$(hostname): KILL" $pids; '
          f'sudo kill -KILL $pids || true; for _ in $(seq {KILL_WAIT_S}); do '
          f'[ -z "$({HOLDERS})" ] && break; sleep 1; done; fi; '
          f'else echo "$(hostname): no process holds the TPU"; fi')


def stop_previous_trainer(grace_s: int) -> str:
  """TERM (then KILL) the trainer of the last `train`, if it still runs. stop_holders cannot
  see it before it opens the chips: one waiting in jax.distributed for a peer that died."""
  alive = TRAINER_ALIVE
  return (f'p=$(cat {PID_FILE} 2>/dev/null || true); if [ -n "$p" ] && {alive}; then '
          f'echo "$(hostname): TERM the previous trainer ($p)"; kill -TERM "$p" || true; '
          f'for _ in $(seq {int(grace_s)}); do {alive} || break; sleep 1; done; '
          f'if {alive}; then kill -KILL "$p" || true; fi; fi')


def apt_get() -> str:
  """A shell function `apt_get ARGS`: sudo apt-get ARGS, tried again while apt's lock is held."""
  fail = 'rm -f "$err"; echo "$(hostname): apt-get $*'
  return (f'apt_get() {{ err=$(mktemp); for try in $(seq {APT_TRIES}); do if sudo apt-get -o '
          f'DPkg::Lock::Timeout={APT_LOCK_WAIT_S} "$@" 2>"$err"; then cat "$err" >&2; '
          f'rm -f "$err"; return 0; fi; cat "$err" >&2; if ! grep -qE '
          f'{shlex.quote(APT_LOCK_ERRORS)} "$err"; then {fail} failed" >&2; return 1; fi; '
          f'echo "$(hostname): apt-get $1: apt\'s lock is held (try $try of {APT_TRIES}; on a '
          f'new VM its first upgrade holds it for minutes)" >&2; sleep {APT_RETRY_S}; done; '
          f'{fail} failed {APT_TRIES} times: apt\'s lock stayed held" >&2; return 1; }}')


def remote_setup(args) -> str:
  """Per-worker install: Python venv, the copied checkout, requirements once per content hash."""
  python = shlex.quote(args.python)
  jax_spec = shlex.quote(f"jax[tpu]=={args.jax_version}" if args.jax_version else "jax[tpu]")
  steps = ["set -e", apt_get()]
  if args.mount_bucket:
    bucket, point = shlex.quote(args.mount_bucket), shlex.quote(args.mount_point)
    steps += [
        "if ! command -v gcsfuse >/dev/null; then echo \"deb [signed-by=/usr/share/keyrings/"
        "cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -cs) "
        "main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null; curl -fsSL "
        "https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee "
        "/usr/share/keyrings/cloud.google.asc >/dev/null; apt_get update -qq; "
        "apt_get install -y -qq gcsfuse; fi",
        # Only when not mounted yet: on a live mount (a rerun of setup after a code change) root
        # cannot stat the FUSE mount (no allow_other) and chown fails on a read-only mount, and
        # set -e would then stop before the new code is copied.
        f'if ! mountpoint -q {point}; then sudo mkdir -p {point}; sudo chown "$USER" {point}; '
        f"gcsfuse --implicit-dirs -o ro {bucket} {point}; fi",
    ]
  steps += [
      f"if ! command -v {python} >/dev/null; then apt_get update -qq; "
      f"apt_get install -y -qq {python} {python}-venv; fi",
      # A venv of another Python (setup run again with another --python) is made anew, and
      # its install marker goes with it: the new venv holds no requirements yet.
      f'if [ ! -x {VENV_PYTHON} ] || [ "$({VENV_PYTHON} --version 2>&1)" != '
      f'"$({python} --version 2>&1)" ]; then rm -rf ~/glmjax/venv {MARKER}; {python} -m venv '
      f"~/glmjax/venv; fi",
      f"rm -rf {CODE}", f"mkdir -p {CODE} {LOGS}", f"tar xzf {ARCHIVE} -C {CODE}",
      f"rm -f {ARCHIVE}", f"cd {CODE}",
      f'want=$({{ cat requirements.txt; echo {jax_spec}; {VENV_PYTHON} --version; }} | sha256sum)',
      f'if [ "$(cat {MARKER} 2>/dev/null)" = "$want" ]; then '
      f'echo "$(hostname): requirements unchanged, install skipped"; else '
      f"{VENV_PYTHON} -m pip install -q --upgrade pip; "
      f"{VENV_PYTHON} -m pip install -q -r requirements.txt {jax_spec}; "
      f'echo "$want" > {MARKER}; echo "$(hostname): installed"; fi',
  ]
  return "; ".join(steps)


def check_trainer(check_s: int) -> str:
  """Watch the new trainer for check_s seconds; if it died with an error, show why and fail.

  Without this a trainer that dies at once (a config error, a tokenizer missing on the mount)
  looks started, and the other workers' trainers wait half an hour in jax.distributed for it.
  """
  # The trainer is this shell's own child: setsid forks only a process group leader, which a
  # background job of a non-interactive shell is not, and nohup execs. So bash reaps it as it
  # ends (kill -0 then fails) and `wait` still gives its exit status.
  return (f'pid=$(cat {PID_FILE}); for _ in $(seq {int(check_s)}); do '
          f'kill -0 "$pid" 2>/dev/null || break; sleep 1; done; '
          f'if ! kill -0 "$pid" 2>/dev/null; then status=0; wait "$pid" || status=$?; '
          f'if [ "$status" != 0 ]; then echo "$(hostname): the trainer exited with status '
          f'$status within {int(check_s)} s; the end of {TRAIN_LOG}:" >&2; '
          f"tail -n {LOG_TAIL_LINES} {TRAIN_LOG} >&2; exit \"$status\"; fi; "
          f'echo "$(hostname): the trainer already finished (status 0)"; fi')


def load_secrets() -> str:
  """Exports what the copied file holds, then deletes it whether or not it could be read."""
  return (f"status=0; . {SECRETS} || status=$?; rm -f {SECRETS}; "
          f'[ "$status" = 0 ] || {{ echo "$(hostname): cannot read the forwarded variables '
          f'({SECRETS})" >&2; exit 1; }}')


def remote_train(args) -> str:
  """Stop old chip holders, keep the old log, start the trainer detached (survives ssh exit)."""
  # GLMJAX_DISTRIBUTED=1: every worker joins jax.distributed (peers from the TPU metadata), which
  # carries the preemption notice that makes all hosts save the same step on SIGTERM.
  return "; ".join([
      "set -e",  # a step that fails (no venv, a full disk for the log) stops here, no trainer
      *([load_secrets()] if args.env else []),  # first: no failure below leaves the file there
      f'cd {CODE} && [ -x {VENV_PYTHON} ] || {{ echo "$(hostname): no checkout or venv in '
      f'~/glmjax; run setup first" >&2; exit 1; }}',
      stop_previous_trainer(args.grace), stop_holders(args.grace), f"mkdir -p {LOGS}",
      f"if [ -f {TRAIN_LOG} ]; then mv {TRAIN_LOG} {LOGS}/train.$(date +%Y%m%d-%H%M%S).log; fi",
      "export PYTHONUNBUFFERED=1 GLMJAX_DISTRIBUTED=1",
      f"setsid nohup {trainer_command(args)} > {TRAIN_LOG} 2>&1 < /dev/null & echo $! > {PID_FILE}",
      f'echo "$(hostname): trainer started (pid $(cat {PID_FILE})), log {TRAIN_LOG}"',
      check_trainer(args.check_s),
  ])


def trainer_command(args) -> str:
  return " ".join([VENV_PYTHON, "-m", "glmjax.train", *map(shlex.quote, args.train_args)])


def secrets_text(names) -> str:
  """The file `train --env` copies to SECRETS: one quoted `export NAME=VALUE` line each."""
  return "".join(f"export {name}={shlex.quote(os.environ[name])}\n" for name in names)


REMOTE_STATUS = (
    f'p=$(cat {PID_FILE} 2>/dev/null || true); if [ -n "$p" ] && {TRAINER_ALIVE}; then '
    f'state=running; else state="not running"; fi; '
    f'echo "$(hostname): trainer $state | $(tail -n 1 {TRAIN_LOG} 2>/dev/null)"')
