"""Cloud TPU launcher: create a slice, set up its workers, train, watch, stop, delete.

  python launch/tpu.py create --name=glm --zone=us-east5-a --accelerator=v5p-128 [--spot]
  python launch/tpu.py setup  --name=glm --zone=us-east5-a --accelerator=v5p-128
  python launch/tpu.py train  --name=glm --zone=us-east5-a -- --config=configs/glm_10b.py \
      --workdir=gs://BUCKET/glm10b ...
  python launch/tpu.py status|logs|stop|delete --name=glm --zone=us-east5-a

Every subcommand takes --dry-run (print the commands, run nothing). launch/README.md walks
through a whole run; launch/tpu_remote.py holds the shell commands run on the workers. Nothing
a user passes is ever run as shell on a worker: every value that goes into a remote command is
quoted, and commands run locally from argv lists (no shell). Secrets never go on the command
line: `train --env NAME` forwards the local variable NAME.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]  # also when a test imports this file by its path
from glmjax import topology  # noqa: E402  (stdlib only: the launcher needs no jax)
from tpu_remote import (  # noqa: E402
    ARCHIVE, REMOTE_STATUS, TRAIN_LOG, remote_setup, remote_train, stop_holders,
    stop_previous_trainer)

# Default TPU VM software version per generation (gcloud --version / --runtime-version).
RUNTIMES = {"v4": "tpu-ubuntu2204-base", "v5p": "v2-alpha-tpuv5", "v5e": "v2-alpha-tpuv5-lite",
            "v6e": "v2-alpha-tpuv6e"}

# Outside a git work tree `setup` packs the folder without these: caches anywhere, and the
# top-level folders .gitignore lists (logs, a venv, wheels, build output).
UNSHIPPED = {".git", "__pycache__", ".pytest_cache"}
UNSHIPPED_TOP = {"logs", ".venv", ".whl", "build", "dist", "tmp"}


class UsageError(Exception):
  """A wrong or missing flag: one line on stderr, exit status 2."""


@dataclasses.dataclass
class PerWorker:
  """Commands run for each worker, all workers in parallel, one local log file per worker."""
  commands: dict[int, list[list[str]]]
  log_dir: str


@dataclasses.dataclass
class Pack:
  """Pack the checkout into a local archive for setup to copy (in-process, see pack())."""
  archive: str


def parse_accelerator(accelerator: str) -> topology.TpuSlice:
  """The slice an --accelerator names (glmjax.topology: the same table `glmjax.aot` uses)."""
  try:
    return topology.parse_slice(accelerator or "")
  except topology.TopologyError as error:
    raise UsageError(str(error).replace("--topology=", "--accelerator=")) from None


def accelerator_workers(accelerator: str) -> int:
  """TPU VMs (gcloud --worker=N targets) in a slice, from its accelerator type."""
  return parse_accelerator(accelerator).hosts


def local_jax_version() -> str:
  try:
    return importlib.metadata.version("jax")
  except importlib.metadata.PackageNotFoundError:
    return ""


def gcloud(args, group: str, verb: str, *extra: str) -> list[str]:
  command = ["gcloud", "compute", "tpus", group, verb, args.name, f"--zone={args.zone}"]
  if args.project:
    command.append(f"--project={args.project}")
  return command + list(extra)


def ssh(args, worker, remote: str) -> list[str]:
  # No --strict-host-key-checking override: gcloud records a worker's host key on the first
  # connection and checks it on every later one.
  return gcloud(args, "tpu-vm", "ssh", f"--worker={worker}", f"--command={remote}")


def scp(args, local: str, worker: int) -> list[str]:
  """Copies `local` to ARCHIVE on one worker (gcloud's scp takes no NAME, only SRC and DEST)."""
  # A relative remote path lands in the worker's home directory, i.e. at ARCHIVE (~/...).
  command = ["gcloud", "compute", "tpus", "tpu-vm", "scp", local,
             f"{args.name}:{ARCHIVE.removeprefix('~/')}",
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


def train_workdir(train_args: list[str]) -> str | None:
  for i, word in enumerate(train_args):
    if word.startswith("--workdir="):
      return word.split("=", 1)[1]
    if word == "--workdir" and i + 1 < len(train_args):
      return train_args[i + 1]
  return None


def plan(args, reveal: bool = False) -> list:
  """The steps of a subcommand in order: argv lists, Pack, or a PerWorker group (in parallel).

  reveal=False (what is printed) shows forwarded environment variables as NAME=<redacted>;
  reveal=True (what runs) carries their values.
  """
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
    return [ssh(args, args.worker, f"tail -n {args.lines}{follow} {TRAIN_LOG}")]
  if args.command == "stop":
    return [ssh(args, "all", "; ".join([stop_previous_trainer(args.grace),
                                         stop_holders(args.grace)]))]
  if args.command == "train":
    return [ssh(args, "all", remote_train(args, reveal))]
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


def execute(args, shown: list, real: list) -> int:
  for show, command in zip(shown, real):
    if isinstance(command, PerWorker):
      if args.dry_run:
        print(f"# in parallel on {len(command.commands)} worker(s), output in "
              f"{command.log_dir}/setup-worker<N>.log:")
        for worker in show.commands:
          for line in show.commands[worker]:
            print(shlex.join(line))
        continue
      code = run_per_worker(show, command)
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
      print(shlex.join(show))
      continue
    else:
      print(f"+ {shlex.join(show)}", file=sys.stderr, flush=True)
      code = subprocess.run(command, check=False).returncode
    if code:
      return code
  return 0


def run_per_worker(show: PerWorker, group: PerWorker) -> int:
  log_dir = os.path.join(REPO, group.log_dir)
  os.makedirs(log_dir, exist_ok=True)

  def one(worker: int) -> int:
    path = os.path.join(log_dir, f"setup-worker{worker}.log")
    with open(path, "w", encoding="utf-8") as log:
      for printable, command in zip(show.commands[worker], group.commands[worker]):
        log.write(f"+ {shlex.join(printable)}\n")
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
  return max(codes.values(), default=0)


class Parser(argparse.ArgumentParser):
  def error(self, message):  # one line, no usage dump
    raise UsageError(f"{message} (see {self.prog} --help)")


def parse(argv) -> argparse.Namespace:
  common = Parser(add_help=False)
  common.add_argument("--name", help="TPU slice name (also the queued resource's name)")
  common.add_argument("--zone", help="e.g. us-east5-a (v5p), us-central2-b (v4)")
  common.add_argument("--project", default="", help="default: gcloud's configured project")
  common.add_argument("--mode", choices=("tpu-vm", "queued"), default="tpu-vm",
                      help="queued: the slice comes from a queued resource (create/status/delete)")
  common.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  parser = Parser(prog="launch/tpu.py", description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  sub.required = True
  create = sub.add_parser("create", parents=[common], help="create the slice")
  create.add_argument("--accelerator", help="v4-N, v5p-N, v5litepod-N or v6e-N")
  create.add_argument("--runtime", help="TPU software version (default: per generation)")
  tier = create.add_mutually_exclusive_group()
  tier.add_argument("--spot", action="store_true", help="spot capacity (cheap, preemptible)")
  tier.add_argument("--reserved", action="store_true", help="use the project's reservation")
  setup = sub.add_parser("setup", parents=[common], help="copy this checkout, install (parallel)")
  setup.add_argument("--accelerator", help="the slice's type; gives the worker count")
  setup.add_argument("--workers", type=int, help="worker count (overrides --accelerator)")
  setup.add_argument("--jax-version", default=None,
                     help="pin jax[tpu]==VERSION (default: the local jax; '' leaves it unpinned)")
  setup.add_argument("--python", default="python3.11", help="interpreter for the workers' venv")
  setup.add_argument("--mount-bucket", default="", help="gcsfuse-mount this bucket (read-only)")
  setup.add_argument("--mount-point", default="/mnt/gcs", help="where --mount-bucket goes")
  setup.add_argument("--log-dir", default="", help="local per-worker logs (default logs/NAME)")
  train = sub.add_parser("train", parents=[common],
                         help="start the trainer detached on every worker; args after --")
  train.add_argument("--env", action="append", default=[], metavar="NAME",
                     help="forward the local environment variable NAME (repeatable)")
  train.add_argument("--check-s", type=int, default=20, metavar="SECONDS",
                     help="watch the trainers this long; one that exits with an error in that "
                     "time fails its worker and train, with its log's end (0: no check)")
  sub.add_parser("status", parents=[common], help="slice state; per worker: trainer, last line")
  logs = sub.add_parser("logs", parents=[common], help="a worker's training log")
  logs.add_argument("--worker", default="0", help="worker index, or all")
  logs.add_argument("--lines", type=int, default=100)
  logs.add_argument("-f", "--follow", action="store_true", help="keep following the log")
  stop = sub.add_parser("stop", parents=[common], help="stop the processes holding the chips")
  sub.add_parser("delete", parents=[common], help="delete the slice (or queued resource)")
  for command in (train, stop):
    command.add_argument("--grace", type=int, default=300,
                         help="seconds between TERM (checkpoint and exit) and KILL")
  split = argv.index("--") if "--" in argv else len(argv)
  args = parser.parse_args(argv[:split])
  args.train_args = argv[split + 1:]
  validate(args, has_separator=split < len(argv))
  return args


def validate(args, has_separator: bool) -> None:
  if not args.name:
    raise UsageError("--name is required: the TPU slice name, e.g. --name=glm10b")
  if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", args.name):
    raise UsageError(f"--name={args.name!r}: use lower-case letters, digits and '-', "
                     "starting with a letter (e.g. --name=glm10b)")
  if not args.zone:
    raise UsageError("--zone is required: the slice's zone, e.g. --zone=us-east5-a")
  if re.fullmatch(r"[a-z]+-[a-z]+[0-9]+", args.zone):  # us-east5: a region, which holds zones
    raise UsageError(f"--zone={args.zone} is a region; name one of its zones, e.g. "
                     f"--zone={args.zone}-a (the Cloud TPU zones page lists which zones have "
                     "your TPU generation)")
  if has_separator and args.command != "train":
    raise UsageError(f"{args.command} takes no arguments after --; only train passes them on")
  if args.command == "create":
    if not args.accelerator:
      raise UsageError("create needs --accelerator, e.g. --accelerator=v5p-128")
    spec = parse_accelerator(args.accelerator)
    try:
      standard = parse_accelerator(spec.accelerator_type)
    except UsageError:  # a torus shape of no standard size: no accelerator type makes it
      raise UsageError(f"--accelerator={args.accelerator}: Cloud TPU has no accelerator type "
                       f"{spec.accelerator_type} for this shape; create makes accelerator types "
                       "only: create this torus shape with gcloud itself") from None
    if standard.shape != spec.shape:  # gcloud's type names one shape per size
      raise UsageError(
          f"--accelerator={args.accelerator}: Cloud TPU's {spec.accelerator_type} is "
          f"{standard.topology_name}, not {spec.topology_name}, and create only makes accelerator "
          f"types; use --accelerator={spec.accelerator_type} (and compile with glmjax.aot "
          f"--topology={spec.accelerator_type}), or create this torus shape with gcloud itself")
    args.accelerator = spec.accelerator_type  # gcloud's name: v5e-16 -> v5litepod-16
    args.runtime = args.runtime or RUNTIMES[spec.generation.name]
  if args.command == "setup":
    if args.workers is None:
      if not args.accelerator:
        raise UsageError("setup needs --accelerator=TYPE (or --workers=N) to set up each "
                         "worker in parallel")
      args.workers = accelerator_workers(args.accelerator)
    if args.workers < 1:
      raise UsageError(f"--workers={args.workers}: needs at least 1")
    if args.jax_version is None:
      args.jax_version = local_jax_version()
    if args.mount_bucket and not re.fullmatch(r"[a-z0-9][-_.a-z0-9]{1,220}", args.mount_bucket):
      raise UsageError(f"--mount-bucket={args.mount_bucket!r}: a bucket name, without gs://")
  # `seq` of a negative count is empty: the KILL would follow the TERM at once, no checkpoint.
  if args.command in ("train", "stop") and args.grace < 0:
    raise UsageError(f"--grace={args.grace}: seconds between TERM and KILL, 0 or more (a "
                     "trainer needs them to save its checkpoint)")
  if args.command == "logs" and not re.fullmatch(r"all|\d+", args.worker):
    raise UsageError(f"--worker={args.worker!r}: a worker index (0, 1, ...) or all")
  if args.command == "train":
    if args.check_s < 0:
      raise UsageError(f"--check-s={args.check_s}: seconds, 0 or more")
    for name in args.env:
      if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        var = name.split("=")[0]  # never echo a value given by mistake
        raise UsageError(f"--env {var}=...: --env takes a variable NAME, never a value on the "
                         f"command line; export {var} locally and pass --env {var}")
      if name not in os.environ:
        raise UsageError(f"--env {name}: {name} is not set in the local environment; "
                         f"export {name}=... first")
    if not args.train_args:
      raise UsageError("train needs the trainer's flags after --, e.g. -- "
                       "--config=configs/glm_10b.py --workdir=gs://BUCKET/run")
    workdir = train_workdir(args.train_args)
    if workdir is None:
      raise UsageError("train needs --workdir=gs://BUCKET/RUN after -- (checkpoints and resume)")
    if not workdir.startswith("gs://"):
      print(f"warning: --workdir={workdir} is not on GCS; each worker writes its own copy and a "
            "new VM after preemption cannot resume from it", file=sys.stderr)


def main(argv=None) -> int:
  try:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    shown = plan(args, reveal=False)
    real = shown if args.dry_run else plan(args, reveal=True)
    if not args.dry_run and shutil.which("gcloud") is None:
      raise UsageError("gcloud not found: install the Google Cloud CLI and run gcloud auth login "
                       "(or use --dry-run)")
  except UsageError as error:
    print(f"launch/tpu.py: error: {error}", file=sys.stderr)
    return 2
  return execute(args, shown, real)


if __name__ == "__main__":
  sys.exit(main())
