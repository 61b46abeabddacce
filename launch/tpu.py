"""Cloud TPU VM launcher: create a slice, copy the code, run on every worker, stop, delete.

  python launch/tpu.py create --name=glm --zone=us-central2-b --accelerator=v4-32
  python launch/tpu.py run --name=glm --zone=us-central2-b -- --config=configs/large.py \
      --workdir=gs://BUCKET/glm-large
  python launch/tpu.py stop --name=glm --zone=us-central2-b
  python launch/tpu.py delete --name=glm --zone=us-central2-b

Every subcommand takes --dry-run, which prints the gcloud commands instead of running them.
`run` copies this checkout to every worker, installs requirements.txt once, and starts
`python -m glmjax.train` on all workers at once (jax.distributed finds its peers from the TPU
metadata), with one log file per worker under ./logs/NAME/. `stop` kills only the processes that
hold the TPU devices, not every Python process.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from concurrent import futures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REMOTE_DIR = "glmjax"
# Processes holding the chips: /dev/accel* on v4, /dev/vfio/* on v5e/v5p/v6e.
KILL_TPU_HOLDERS = ("sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null | sort -u | "
                    "xargs -r sudo kill -TERM; sleep 5; sudo lsof -t /dev/accel* /dev/vfio/* "
                    "2>/dev/null | sort -u | xargs -r sudo kill -KILL || true")


def gcloud_tpu(args, *words: str) -> list[str]:
  command = ["gcloud", "compute", "tpus", "tpu-vm", *words, args.name, f"--zone={args.zone}"]
  if args.project:
    command.append(f"--project={args.project}")
  return command


def ssh(args, worker: str, remote_command: str) -> list[str]:
  return gcloud_tpu(args, "ssh") + [f"--worker={worker}", "--strict-host-key-checking=no",
                                     f"--command={remote_command}"]


def plan(args) -> list[list[str]]:
  """The commands a subcommand runs, in order (one list per command)."""
  if args.command == "create":
    command = gcloud_tpu(args, "create") + [f"--accelerator-type={args.accelerator}",
                                            f"--version={args.runtime}"]
    if args.spot:
      command.append("--spot")
    return [command]
  if args.command == "delete":
    return [gcloud_tpu(args, "delete") + ["--quiet"]]
  if args.command == "stop":
    return [ssh(args, "all", KILL_TPU_HOLDERS)]
  if args.command == "run":
    archive = f"/tmp/{args.name}-glmjax.tar.gz"
    train_args = " ".join(shlex.quote(a) for a in args.train_args)
    remote = (f"mkdir -p ~/{REMOTE_DIR} && tar xzf ~/{os.path.basename(archive)} -C ~/{REMOTE_DIR}"
              f" && cd ~/{REMOTE_DIR} && python3 -m pip install -q -r requirements.txt "
              f"'jax[tpu]' && {KILL_TPU_HOLDERS}; python3 -m glmjax.train {train_args}")
    return [
        ["tar", "czf", archive, "--exclude=.git", "--exclude=__pycache__", "-C", REPO, "."],
        gcloud_tpu(args, "scp") + [archive, f"{args.name}:~/", "--worker=all",
                                   "--strict-host-key-checking=no"],
        ssh(args, "all", remote),
    ]
  raise ValueError(f"unknown command {args.command}")


def execute(args, commands: list[list[str]]) -> int:
  for command in commands:
    printable = " ".join(shlex.quote(word) for word in command)
    if args.dry_run:
      print(printable)
      continue
    print(f"+ {printable}", file=sys.stderr)
    if args.command == "run" and command[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] and \
        "ssh" in command and args.workers > 1:
      return _run_per_worker(args, command)
    result = subprocess.run(command, check=False)
    if result.returncode:
      return result.returncode
  return 0


def _run_per_worker(args, command: list[str]) -> int:
  """One ssh per worker in parallel, each with its own log file."""
  log_dir = os.path.join("logs", args.name)
  os.makedirs(log_dir, exist_ok=True)

  def one(worker):
    per_worker = [f"--worker={worker}" if w == "--worker=all" else w for w in command]
    with open(os.path.join(log_dir, f"worker{worker}.log"), "w", encoding="utf-8") as log:
      return subprocess.run(per_worker, stdout=log, stderr=subprocess.STDOUT, check=False).returncode

  with futures.ThreadPoolExecutor(args.workers) as pool:
    codes = list(pool.map(one, range(args.workers)))
  print(f"logs in {log_dir}; exit codes {codes}", file=sys.stderr)
  return max(codes)


def parse(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("command", choices=("create", "run", "stop", "delete"))
  parser.add_argument("--name", required=True, help="TPU VM (slice) name")
  parser.add_argument("--zone", required=True)
  parser.add_argument("--project", default="")
  parser.add_argument("--accelerator", default="v4-8", help="e.g. v4-32, v5p-64, v6e-16")
  parser.add_argument("--runtime", default="tpu-ubuntu2204-base", help="TPU VM software version")
  parser.add_argument("--spot", action="store_true")
  parser.add_argument("--workers", type=int, default=1,
                      help="hosts in the slice; >1 gives one log file per worker")
  parser.add_argument("--dry-run", action="store_true", help="print the commands only")
  argv = list(sys.argv[1:] if argv is None else argv)
  split = argv.index("--") if "--" in argv else len(argv)
  args = parser.parse_args(argv[:split])
  args.train_args = argv[split + 1:]  # everything after -- goes to glmjax.train
  return args


def main(argv=None) -> int:
  args = parse(argv)
  return execute(args, plan(args))


if __name__ == "__main__":
  sys.exit(main())
