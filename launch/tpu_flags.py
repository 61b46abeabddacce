"""launch/tpu.py's flags: parsed, and checked before any gcloud command is built, each mistake
one line (exit status 2) naming the flag and what to give."""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import sys

from glmjax import topology  # launch/tpu.py puts the repository on sys.path (stdlib only)

# Default TPU VM software version per generation (gcloud --version / --runtime-version).
RUNTIMES = {"v4": "tpu-ubuntu2204-base", "v5p": "v2-alpha-tpuv5", "v5e": "v2-alpha-tpuv5-lite",
            "v6e": "v2-alpha-tpuv6e"}


class UsageError(Exception):
  """A wrong or missing flag: one line on stderr, exit status 2."""


def parse_accelerator(accelerator: str) -> topology.TpuSlice:
  """The slice an --accelerator names (glmjax.topology: the same table `glmjax.aot` uses)."""
  try:
    spec = topology.parse_slice(accelerator or "")
  except topology.TopologyError as error:
    raise UsageError(str(error).replace("--topology=", "--accelerator=")) from None
  if spec.slices > 1:  # one gcloud TPU VM is one slice: its workers would be miscounted
    raise UsageError(f"--accelerator={accelerator}: launch/tpu.py creates and runs one slice; "
                     "several (multi-slice) are made with gcloud's queued resources")
  return spec


def accelerator_workers(accelerator: str) -> int:
  """TPU VMs (gcloud --worker=N targets) in a slice, from its accelerator type."""
  return parse_accelerator(accelerator).hosts


def local_jax_version() -> str:
  try:
    return importlib.metadata.version("jax")
  except importlib.metadata.PackageNotFoundError:
    return ""


def train_workdir(train_args: list[str]) -> str | None:
  for i, word in enumerate(train_args):
    if word.startswith("--workdir="):
      return word.split("=", 1)[1]
    if word == "--workdir" and i + 1 < len(train_args):
      return train_args[i + 1]
  return None


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
    elif args.accelerator:  # --workers wins; the name is checked all the same
      parse_accelerator(args.accelerator)
    if args.workers < 1:
      raise UsageError(f"--workers={args.workers}: needs at least 1")
    if args.jax_version is None:
      args.jax_version = local_jax_version()
    if args.mount_bucket and not re.fullmatch(r"[a-z0-9][-_.a-z0-9]{1,220}", args.mount_bucket):
      raise UsageError(f"--mount-bucket={args.mount_bucket!r}: a bucket name, without gs://")
  # `seq` of 0 or less is empty: the KILL would follow the TERM at once, no checkpoint.
  if args.command in ("train", "stop") and args.grace < 1:
    raise UsageError(f"--grace={args.grace}: seconds between TERM and KILL, at least 1 (a "
                     "trainer needs them to save its checkpoint)")
  if args.command == "logs" and not re.fullmatch(r"all|\d+", args.worker):
    raise UsageError(f"--worker={args.worker!r}: a worker index (0, 1, ...) or all")
  if args.command == "logs" and args.lines < 1:
    raise UsageError(f"--lines={args.lines}: how many of the log's last lines to show, at least 1")
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
    if not workdir.startswith(("gs://", "/")):  # ~ too: quoted, the worker's shell keeps it
      raise UsageError(f"--workdir={workdir}: a relative path is read in ~/glmjax/code, which "
                       "the next setup replaces, checkpoints and all; give gs://BUCKET/RUN (or "
                       "an absolute path)")
    if not workdir.startswith("gs://"):
      print(f"warning: --workdir={workdir} is not on GCS; each worker writes its own copy and a "
            "new VM after preemption cannot resume from it", file=sys.stderr)
