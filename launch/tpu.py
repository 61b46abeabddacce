"""Cloud TPU launcher: create a slice, set up its workers, train, watch, stop, delete.

  python launch/tpu.py create --name=glm --zone=us-east5-a --accelerator=v5p-128 [--spot]
  python launch/tpu.py setup  --name=glm --zone=us-east5-a --accelerator=v5p-128
  python launch/tpu.py train  --name=glm --zone=us-east5-a -- --config=configs/glm_10b.py \
      --workdir=gs://BUCKET/glm10b ...
  python launch/tpu.py status|logs|stop|delete --name=glm --zone=us-east5-a

Every subcommand takes --dry-run (print the commands, run nothing). launch/README.md walks
through a whole run; launch/tpu_flags.py parses and checks the flags; launch/tpu_remote.py
holds the shell commands run on the workers. Nothing a user passes is ever run as shell on a
worker: every value that goes into a remote command is quoted, and commands run locally from
argv lists (no shell). Secrets never go on a command line: `train --env NAME` copies the local
variable NAME to the workers in a file only the user can read, which the trainer's start reads
and deletes.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]  # also when a test imports this file by its path
from tpu_remote import (  # noqa: E402
    ARCHIVE, REMOTE_STATUS, SECRETS, TRAIN_LOG, remote_setup, remote_train, secrets_text,
    stop_holders, stop_previous_trainer)
from tpu_flags import (  # noqa: E402  (glmjax.topology: stdlib only, the launcher needs no jax)
    UsageError, accelerator_workers, parse)  # pylint: disable=unused-import  (tests use it here)

# Outside a git work tree `setup` packs the folder without these: caches anywhere, and the
# top-level folders .gitignore lists (logs, a venv, wheels, build output).
UNSHIPPED = {".git", "__pycache__", ".pytest_cache"}
UNSHIPPED_TOP = {"logs", ".venv", ".whl", "build", "dist", "tmp"}


@dataclasses.dataclass
class PerWorker:
  """Commands run for each worker, all workers in parallel, one local log file per worker."""
  commands: dict[int, list[list[str]]]
  log_dir: str


@dataclasses.dataclass
class Secrets:
  """Copy the variables `train --env` names to every worker (see send_secrets())."""
  names: list[str]


@dataclasses.dataclass
class Pack:
  """Pack the checkout into a local archive for setup to copy (in-process, see pack())."""
  archive: str


def gcloud(args, group: str, verb: str, *extra: str) -> list[str]:
  command = ["gcloud", "compute", "tpus", group, verb, args.name, f"--zone={args.zone}"]
  if args.project:
    command.append(f"--project={args.project}")
  return command + list(extra)


def ssh(args, worker, remote: str) -> list[str]:
  # No --strict-host-key-checking override: gcloud records a worker's host key on the first
  # connection and checks it on every later one.
  return gcloud(args, "tpu-vm", "ssh", f"--worker={worker}", f"--command={remote}")


def scp(args, local: str, worker, remote: str = ARCHIVE) -> list[str]:
  """Copies `local` to `remote` (~/...) on one worker or all (gcloud's scp takes no NAME, only
  SRC and DEST)."""
  # A relative remote path lands in the worker's home directory, i.e. at `remote`.
  command = ["gcloud", "compute", "tpus", "tpu-vm", "scp", local,
             f"{args.name}:{remote.removeprefix('~/')}",
             f"--zone={args.zone}"]
  if args.project:
    command.append(f"--project={args.project}")
  return command + [f"--worker={worker}"]


def checkout_files() -> list[str] | None:
  """What setup ships: the files git tracks or would track (so nothing .gitignore ignores: no
  venv, wheels or build output), or None when REPO is not a git work tree."""
  try:
    listed = subprocess.run(["git", "-C", REPO, "ls-files", "-z", "-co", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode()
  except (OSError, subprocess.CalledProcessError):
    return None
  # A tracked file deleted from the work tree is still listed; an unmerged one once per stage.
  return [path for path in dict.fromkeys(listed.split("\0"))
          if path and os.path.lexists(os.path.join(REPO, path))]


def describe_pack(step: Pack) -> str:
  if checkout_files() is None:
    return (f"# pack {REPO} (not a git work tree) without {', '.join(sorted(UNSHIPPED))} and the "
            f"top-level {', '.join(sorted(UNSHIPPED_TOP))} into {step.archive}")
  return (f"# pack the files of {REPO} that git ls-files -co --exclude-standard lists into "
          f"{step.archive}")


def pack(step: Pack) -> None:
  def shipped(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    parts = os.path.normpath(info.name).split(os.sep)
    unshipped = parts[0] in UNSHIPPED_TOP or UNSHIPPED.intersection(parts)
    return None if unshipped or info.name.endswith(".pyc") else info

  files = checkout_files()
  partial = f"{step.archive}.part"  # a failed pack never leaves a half archive to copy
  try:
    with tarfile.open(partial, "w:gz") as archive:
      if files is None:
        archive.add(REPO, arcname=".", filter=shipped)
      for path in files or ():
        archive.add(os.path.join(REPO, path), arcname=path, recursive=False)
    os.replace(partial, step.archive)
  finally:
    if os.path.exists(partial):
      os.remove(partial)


def plan(args) -> list:
  """The steps of a subcommand in order: argv lists, Pack, Secrets, or a PerWorker group (in
  parallel). No step holds a forwarded variable's value: what is printed is what runs."""
  queued = args.mode == "queued"
  if args.command == "create":
    tier = ["--spot"] if args.spot else ["--reserved"] if args.reserved else []
    if queued:
      return [gcloud(args, "queued-resources", "create", f"--node-id={args.name}",
                     f"--accelerator-type={args.accelerator}",
                     f"--runtime-version={args.runtime}", *tier)]
    return [gcloud(args, "tpu-vm", "create", f"--accelerator-type={args.accelerator}",
                   f"--version={args.runtime}", *tier)]
  if args.command == "delete":
    if queued:  # --force also deletes the TPU VM the queued resource created
      return [gcloud(args, "queued-resources", "delete", "--force", "--quiet")]
    return [gcloud(args, "tpu-vm", "delete", "--quiet")]
  if args.command == "status":
    describe = (gcloud(args, "queued-resources", "describe", "--format=yaml(state)") if queued else
                gcloud(args, "tpu-vm", "describe",
                       "--format=yaml(state,health,acceleratorType,runtimeVersion)"))
    return [describe, ssh(args, "all", REMOTE_STATUS)]
  if args.command == "logs":
    follow = " -F" if args.follow else ""
    # From every worker at once, each line says whose it is (sed -u: followed lines at once).
    # (pipefail: a missing log is tail's failure, not sed's success.)
    label = ' | sed -u "s/^/$(hostname): /"' if args.worker == "all" else ""
    pipefail = "set -o pipefail; " if label else ""
    return [ssh(args, args.worker, f"{pipefail}tail -n {args.lines}{follow} {TRAIN_LOG}{label}")]
  if args.command == "stop":
    return [ssh(args, "all", "; ".join([stop_previous_trainer(args.grace),
                                         stop_holders(args.grace)]))]
  if args.command == "train":
    return [*([Secrets(args.env)] if args.env else []), ssh(args, "all", remote_train(args))]
  if args.command == "setup":
    archive = f"/tmp/glmjax-{args.name}.tar.gz"
    # One connection first: on a machine without ~/.ssh/google_compute_engine it makes the key
    # and adds it to the slice once, where the parallel gcloud processes below would each run
    # ssh-keygen at the same time.
    key = ssh(args, 0, "true")
    remote = remote_setup(args)
    per_worker = {w: [scp(args, archive, w), ssh(args, w, remote)] for w in range(args.workers)}
    return [Pack(archive), key,
            PerWorker(per_worker, args.log_dir or os.path.join("logs", args.name))]
  raise UsageError(f"unknown command {args.command!r}")


def execute(args, steps: list) -> int:
  for command in steps:
    if isinstance(command, PerWorker):
      if args.dry_run:
        print(f"# in parallel on {len(command.commands)} worker(s), output in "
              f"{command.log_dir}/setup-worker<N>.log:")
        for worker in command.commands:
          for line in command.commands[worker]:
            print(shlex.join(line))
        continue
      code = run_per_worker(command)
    elif isinstance(command, Secrets):
      if args.dry_run:
        print(f"# write {', '.join(command.names)} to a local file only you can read, then:")
        print(shlex.join(scp(args, "<that file>", "all", SECRETS)))
        continue
      code = send_secrets(args, command)
    elif isinstance(command, Pack):
      if args.dry_run:
        print(describe_pack(command))
        continue
      print(f"+ {describe_pack(command)[2:]}", file=sys.stderr, flush=True)
      try:
        pack(command)
        code = 0
      except OSError as error:
        print(f"launch/tpu.py: cannot pack the checkout: {error}", file=sys.stderr)
        code = 1
    elif args.dry_run:
      print(shlex.join(command))
      continue
    else:
      print(f"+ {shlex.join(command)}", file=sys.stderr, flush=True)
      code = subprocess.run(command, check=False).returncode
    if code:
      return code
  return 0


def send_secrets(args, step: Secrets) -> int:
  """The values go in a file made 0600 (mkstemp) and deleted once copied; scp keeps the mode, and
  the trainer's start deletes its copy after reading it (tpu_remote.load_secrets)."""
  fd, path = tempfile.mkstemp(prefix="glmjax-env-")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(secrets_text(step.names))
    command = scp(args, path, "all", SECRETS)
    print(f"+ {shlex.join(command)}  # {', '.join(step.names)}", file=sys.stderr, flush=True)
    code = subprocess.run(command, check=False).returncode
    if code:  # ~/glmjax is missing on a slice that was never set up
      print(f"launch/tpu.py: could not copy {', '.join(step.names)} to the workers (exit {code})"
            "; a new slice needs `setup` first.", file=sys.stderr)
    return code
  finally:
    os.remove(path)


def run_per_worker(group: PerWorker) -> int:
  log_dir = os.path.join(REPO, group.log_dir)
  os.makedirs(log_dir, exist_ok=True)

  def one(worker: int) -> int:
    path = os.path.join(log_dir, f"setup-worker{worker}.log")
    with open(path, "w", encoding="utf-8") as log:
      for command in group.commands[worker]:
        log.write(f"+ {shlex.join(command)}\n")
        log.flush()
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, check=False).returncode
        if code:
          return code
    return 0

  workers = sorted(group.commands)
  print(f"+ setting up {len(workers)} worker(s) in parallel; logs in {log_dir}", file=sys.stderr)
  with futures.ThreadPoolExecutor(min(len(workers), 64)) as pool:
    codes = dict(zip(workers, pool.map(one, workers)))
  failed = [w for w in workers if codes[w]]
  for w in failed:
    print(f"worker {w}: FAILED (exit {codes[w]}), see {log_dir}/setup-worker{w}.log")
  print(f"setup: {len(workers) - len(failed)} of {len(workers)} worker(s) ok")
  # The first failed worker's status; a gcloud killed by a signal has a negative one (max()
  # of [0, -9] was 0: a success).
  return next((codes[w] if codes[w] > 0 else 1 for w in failed), 0)


def main(argv=None) -> int:
  try:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    steps = plan(args)
    if not args.dry_run and shutil.which("gcloud") is None:
      raise UsageError("gcloud not found: install the Google Cloud CLI and run gcloud auth login "
                       "(or use --dry-run)")
  except UsageError as error:
    print(f"launch/tpu.py: error: {error}", file=sys.stderr)
    return 2
  return execute(args, steps)


if __name__ == "__main__":
  sys.exit(main())
