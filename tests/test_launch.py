"""launch/tpu.py: the exact dry-run output of every subcommand, ssh's options, usage errors,
worker counts.

Nothing here runs gcloud or srun: dry runs print. tests/test_launch_on_workers.py runs the remote
commands through a real `bash -c` on a stand-in worker.
"""
import importlib.metadata
import importlib.util
import os
import shlex
import subprocess
import sys

import pytest
from launch_stubs import never_the_real_gcloud_or_srun  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU_PY = os.path.join(REPO, "launch", "tpu.py")

_spec = importlib.util.spec_from_file_location("launch_tpu", TPU_PY)
tpu = sys.modules["launch_tpu"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tpu)

ZONE = "--zone=us-east5-a"
SSH = "gcloud compute tpus tpu-vm ssh glm --zone=us-east5-a"
PREVIOUS_300 = (  # the last `train`'s trainer, which may not hold the chips yet
    "p=$(cat ~/glmjax/train.pid 2>/dev/null || true); if [ -n \"$p\" ] && ps -o args= -p \"$p\" "
    "2>/dev/null | grep -q glmjax.train; then echo \"$(hostname): TERM the previous trainer ($p)\"; "
    "kill -TERM \"$p\" || true; for _ in $(seq 300); do ps -o args= -p \"$p\" 2>/dev/null | grep "
    "-q glmjax.train || break; sleep 1; done; if ps -o args= -p \"$p\" 2>/dev/null | grep -q "
    "glmjax.train; then kill -KILL \"$p\" || true; fi; fi; ")
STOP_300 = (
    "pids=$(sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null | sort -u); if [ -n \"$pids\" ]; "
    "then echo \"$(hostname): TERM\" $pids; sudo kill -TERM $pids || true; for _ in $(seq 300); do "
    "[ -z \"$(sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null | sort -u)\" ] && break; sleep 1; "
    "done; pids=$(sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null | sort -u); if [ -n \"$pids\" ]"
    "; then echo \"$(hostname): KILL\" $pids; sudo kill -KILL $pids || true; for _ in $(seq 30); "
    "do [ -z \"$(sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null | sort -u)\" ] && break; sleep 1; "
    "done; fi; else echo "
    "\"$(hostname): no process holds the TPU\"; fi")


def dry_run(capsys, *argv) -> str:
  """stdout of `launch/tpu.py COMMAND --dry-run ARGS...` (in-process)."""
  assert tpu.main([argv[0], "--dry-run", *argv[1:]]) == 0
  return capsys.readouterr().out


def command_payload(line: str) -> str:
  """The remote shell string of a printed `gcloud ... ssh --command=...` line."""
  (word,) = [w for w in shlex.split(line) if w.startswith("--command=")]
  return word[len("--command="):]


# ---------------------------------------------------------------------------------- golden output

def test_create_a_spot_tpu_vm_prints_the_exact_gcloud_command(capsys):
  assert dry_run(capsys, "create", "--name=glm", ZONE, "--accelerator=v5p-128", "--spot") == (
      "gcloud compute tpus tpu-vm create glm --zone=us-east5-a --accelerator-type=v5p-128 "
      "--version=v2-alpha-tpuv5 --spot\n")


def test_create_on_reserved_capacity_uses_the_generation_default_runtime(capsys):
  assert dry_run(capsys, "create", "--name=glm", "--zone=us-west4-a", "--project=my-proj",
                 "--accelerator=v5litepod-16", "--reserved") == (
      "gcloud compute tpus tpu-vm create glm --zone=us-west4-a --project=my-proj "
      "--accelerator-type=v5litepod-16 --version=v2-alpha-tpuv5-lite --reserved\n")


def test_create_takes_the_aot_spelling_of_a_slice_and_gives_gcloud_its_own(capsys):
  assert dry_run(capsys, "create", "--name=glm", ZONE, "--accelerator=v5p:2x4x4").startswith(
      "gcloud compute tpus tpu-vm create glm --zone=us-east5-a --accelerator-type=v5p-64 ")
  assert dry_run(capsys, "create", "--name=glm", ZONE, "--accelerator=v5e-16") == (
      "gcloud compute tpus tpu-vm create glm --zone=us-east5-a --accelerator-type=v5litepod-16 "
      "--version=v2-alpha-tpuv5-lite\n")


def test_create_with_runtime_overrides_the_default_and_plain_capacity_has_no_tier(capsys):
  assert dry_run(capsys, "create", "--name=glm", "--zone=us-east5-b", "--accelerator=v6e-64",
                 "--runtime=v2-alpha-tpuv6e-custom") == (
      "gcloud compute tpus tpu-vm create glm --zone=us-east5-b --accelerator-type=v6e-64 "
      "--version=v2-alpha-tpuv6e-custom\n")


def test_create_in_queued_mode_requests_a_queued_resource_for_spot_or_reserved(capsys):
  assert dry_run(capsys, "create", "--mode=queued", "--name=glm", ZONE, "--accelerator=v5p-128",
                 "--spot") == (
      "gcloud compute tpus queued-resources create glm --zone=us-east5-a --node-id=glm "
      "--accelerator-type=v5p-128 --runtime-version=v2-alpha-tpuv5 --spot\n")
  assert dry_run(capsys, "create", "--mode=queued", "--name=glm", "--zone=us-central2-b",
                 "--accelerator=v4-32", "--reserved") == (
      "gcloud compute tpus queued-resources create glm --zone=us-central2-b --node-id=glm "
      "--accelerator-type=v4-32 --runtime-version=tpu-ubuntu2204-base --reserved\n")


SETUP_PAYLOAD = (
    "set -e; apt_get() { err=$(mktemp); for try in $(seq 30); do if sudo apt-get -o "
    "DPkg::Lock::Timeout=60 \"$@\" 2>\"$err\"; then cat \"$err\" >&2; rm -f \"$err\"; return 0; "
    "fi; cat \"$err\" >&2; if ! grep -qE 'Could not get lock|Unable to lock|Unable to acquire' "
    "\"$err\"; then rm -f \"$err\"; echo \"$(hostname): apt-get $* failed\" >&2; return 1; fi; "
    "echo \"$(hostname): apt-get $1: apt's lock is held (try $try of 30; on a new VM its first "
    "upgrade holds it for minutes)\" >&2; sleep 10; done; rm -f \"$err\"; echo \"$(hostname): "
    "apt-get $* failed 30 times: apt's lock stayed held\" >&2; return 1; }; "
    "if ! command -v gcsfuse >/dev/null; then echo \"deb [signed-by=/usr/share/keyrings/"
    "cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -cs) main\" | "
    "sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null; curl -fsSL https://packages."
    "cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc "
    ">/dev/null; apt_get update -qq; apt_get install -y -qq gcsfuse; fi; if ! mountpoint "
    "-q /mnt/gcs; then sudo mkdir -p /mnt/gcs; sudo chown \"$USER\" /mnt/gcs; gcsfuse "
    "--implicit-dirs -o ro my-bucket /mnt/gcs; fi; if ! command -v python3.11 >/dev/null; then "
    "apt_get update -qq; apt_get install -y -qq python3.11 python3.11-venv; fi; if [ ! "
    "-x ~/glmjax/venv/bin/python ] || [ \"$(~/glmjax/venv/bin/python --version 2>&1)\" != "
    "\"$(python3.11 --version 2>&1)\" ]; then rm -rf ~/glmjax/venv ~/glmjax/installed; python3.11 "
    "-m venv "
    "~/glmjax/venv; fi; rm -rf ~/glmjax/code; mkdir -p ~/glmjax/code "
    "~/glmjax/logs; tar xzf ~/glmjax.tar.gz -C ~/glmjax/code; rm -f ~/glmjax.tar.gz; cd "
    "~/glmjax/code; want=$({ cat requirements.txt; echo 'jax[tpu]==0.10.2'; ~/glmjax/venv/bin/"
    "python --version; } | sha256sum); if [ \"$(cat ~/glmjax/installed 2>/dev/null)\" = "
    "\"$want\" ]; then echo \"$(hostname): requirements unchanged, install skipped\"; else "
    "~/glmjax/venv/bin/python -m pip install -q --upgrade pip; ~/glmjax/venv/bin/python -m pip "
    "install -q -r requirements.txt 'jax[tpu]==0.10.2'; echo \"$want\" > ~/glmjax/installed; "
    "echo \"$(hostname): installed\"; fi")


def test_setup_copies_the_checkout_then_installs_on_each_worker_in_parallel(capsys,
                                                                              monkeypatch):
  # A git work tree (CI's clone) or not (the mutation check's copy): the same golden output.
  monkeypatch.setattr(tpu, "checkout_files", lambda: ["glmjax/train.py"])
  out = dry_run(capsys, "setup", "--name=glm", ZONE, "--workers=2", "--jax-version=0.10.2",
                "--mount-bucket=my-bucket")
  per_worker = "".join(
      f"gcloud compute tpus tpu-vm scp /tmp/glmjax-glm.tar.gz glm:glmjax.tar.gz --zone=us-east5-a"
      f" --worker={w}\n"
      f"{SSH} --worker={w} "
      f"{shlex.quote('--command=' + SETUP_PAYLOAD)}\n" for w in (0, 1))
  assert out == (
      f"# pack the files of {REPO} that git ls-files -co --exclude-standard lists into "
      "/tmp/glmjax-glm.tar.gz\n"
      f"{SSH} --worker=0 --command=true\n"
      "# in parallel on 2 worker(s), output in logs/glm/setup-worker<N>.log:\n" + per_worker)


TRAIN_PAYLOAD = (
    "set -e; status=0; . ~/glmjax/train.env || status=$?; rm -f ~/glmjax/train.env; [ \"$status\" = 0 ] "
    "|| { echo \"$(hostname): cannot read the forwarded variables (~/glmjax/train.env)\" >&2; exit 1; }; "
    "cd ~/glmjax/code && [ -x ~/glmjax/venv/bin/python ] || { echo \"$(hostname): no checkout or "
    "venv in ~/glmjax; run setup first\" >&2; exit 1; }; " + (PREVIOUS_300 + STOP_300).replace("seq 300", "seq 120")
    + "; mkdir -p ~/glmjax/logs; if [ -f ~/glmjax/logs/train.log ]; then mv ~/glmjax/logs/"
    "train.log ~/glmjax/logs/train.$(date +%Y%m%d-%H%M%S).log; fi; export PYTHONUNBUFFERED=1 "
    "GLMJAX_DISTRIBUTED=1; setsid nohup ~/glmjax/venv/bin/python -m glmjax.train "
    "--config=configs/glm_10b.py --workdir=gs://my-bucket/glm10b --config.mesh.fsdp=-1 > "
    "~/glmjax/logs/train.log 2>&1 < /dev/null & echo $! > ~/glmjax/train.pid; echo \"$(hostname)"
    ": trainer started (pid $(cat ~/glmjax/train.pid)), log ~/glmjax/logs/train.log\"; "
    "pid=$(cat ~/glmjax/train.pid); for _ in $(seq 20); do kill -0 \"$pid\" 2>/dev/null || "
    "break; sleep 1; done; if ! kill -0 \"$pid\" 2>/dev/null; then status=0; wait \"$pid\" || "
    "status=$?; if [ \"$status\" != 0 ]; then echo \"$(hostname): the trainer exited with "
    "status $status within 20 s; the end of ~/glmjax/logs/train.log:\" >&2; tail -n 20 "
    "~/glmjax/logs/train.log >&2; exit \"$status\"; fi; echo \"$(hostname): the trainer already "
    "finished (status 0)\"; fi")


def test_train_starts_the_trainer_detached_on_every_worker(capsys, monkeypatch):
  monkeypatch.setenv("HF_TOKEN", "hf_value")
  out = dry_run(capsys, "train", "--name=glm", ZONE, "--env", "HF_TOKEN", "--grace=120", "--",
                "--config=configs/glm_10b.py", "--workdir=gs://my-bucket/glm10b",
                "--config.mesh.fsdp=-1")
  # The value goes in a file only the user can read, never in a command line that `ps` shows.
  assert out == ("# write HF_TOKEN to a local file only you can read, then:\n"
                 "gcloud compute tpus tpu-vm scp '<that file>' glm:glmjax/train.env "
                 "--zone=us-east5-a --worker=all\n"
                 f"{SSH} --worker=all "
                 f"{shlex.quote('--command=' + TRAIN_PAYLOAD)}\n")


def test_status_shows_the_slice_state_then_each_workers_trainer_and_last_log_line(capsys):
  workers = (f"{SSH} --worker=all '--command=p=$(cat ~/glmjax/train.pid 2>/dev/null || true); "
             "if [ -n \"$p\" ] && ps -o args= -p \"$p\" 2>/dev/null | grep -q glmjax.train; then "
             "state=running; else state=\"not running\"; fi; echo \"$(hostname): trainer $state | "
             "$(tail -n 1 ~/glmjax/logs/train.log 2>/dev/null)\"'\n")
  assert dry_run(capsys, "status", "--name=glm", ZONE) == (
      "gcloud compute tpus tpu-vm describe glm --zone=us-east5-a "
      "'--format=yaml(state,health,acceleratorType,runtimeVersion)'\n" + workers)
  assert dry_run(capsys, "status", "--mode=queued", "--name=glm", ZONE) == (
      "gcloud compute tpus queued-resources describe glm --zone=us-east5-a "
      "'--format=yaml(state)'\n" + workers)


def test_logs_shows_or_follows_one_workers_log(capsys):
  assert dry_run(capsys, "logs", "--name=glm", ZONE) == (
      f"{SSH} --worker=0 "
      "'--command=tail -n 100 ~/glmjax/logs/train.log'\n")
  assert dry_run(capsys, "logs", "--name=glm", ZONE, "--worker=3", "--lines=20", "-f") == (
      f"{SSH} --worker=3 "
      "'--command=tail -n 20 -F ~/glmjax/logs/train.log'\n")
  # Every worker's lines at once: each says its worker's host name.
  assert dry_run(capsys, "logs", "--name=glm", ZONE, "--worker=all") == (
      f"{SSH} --worker=all "
      "'--command=set -o pipefail; tail -n 100 ~/glmjax/logs/train.log | sed -u "
      "\"s/^/$(hostname): /\"'\n")


def test_a_grace_of_1_s_and_a_single_log_line_are_the_smallest_taken(capsys):
  # The usage errors below refuse 0 and less; 1 is a wait of one second between TERM and KILL
  # (twice: the trainer's wait and the chips' holders'), and one line of the log.
  assert dry_run(capsys, "stop", "--name=glm", ZONE, "--grace=1").count("$(seq 1);") == 2
  assert dry_run(capsys, "train", "--name=glm", ZONE, "--grace=1", "--",
                 "--workdir=gs://b/r").count("$(seq 1);") == 2
  assert "'--command=tail -n 1 ~/glmjax/logs/train.log'" in dry_run(
      capsys, "logs", "--name=glm", ZONE, "--lines=1")


def test_logs_reaches_a_worker_past_the_ninth_of_a_large_slice(capsys):
  assert dry_run(capsys, "logs", "--name=glm", ZONE, "--worker=12") == (  # v5p-128: 16 workers
      f"{SSH} --worker=12 '--command=tail -n 100 ~/glmjax/logs/train.log'\n")


def test_train_takes_the_trainer_s_workdir_as_one_word_or_two(capsys):
  assert tpu.main(["train", "--dry-run", "--name=glm", ZONE, "--", "--config=c.py",
                   "--workdir", "gs://b/r"]) == 0
  out, err = capsys.readouterr()
  assert "glmjax.train --config=c.py --workdir gs://b/r >" in command_payload(out)
  assert err == ""  # on GCS: no warning
  assert tpu.main(["train", "--dry-run", "--name=glm", ZONE, "--", "--workdir", "/tmp/run"]) == 0
  assert "--workdir=/tmp/run is not on GCS" in capsys.readouterr().err


def test_stop_terms_then_kills_only_the_processes_holding_the_chips(capsys):
  out = dry_run(capsys, "stop", "--name=glm", ZONE)
  assert out == (f"{SSH} --worker=all "
                 f"{shlex.quote('--command=' + PREVIOUS_300 + STOP_300)}\n")
  assert "pkill" not in out and "killall" not in out


def test_delete_removes_the_vm_or_the_queued_resource_with_force(capsys):
  assert dry_run(capsys, "delete", "--name=glm", ZONE) == (
      "gcloud compute tpus tpu-vm delete glm --zone=us-east5-a --quiet\n")
  assert dry_run(capsys, "delete", "--mode=queued", "--name=glm", ZONE) == (
      "gcloud compute tpus queued-resources delete glm --zone=us-east5-a --force --quiet\n")


# ------------------------------------------------------------------------------------------ ssh


def test_ssh_and_scp_leave_host_key_checking_on(capsys):
  printed = dry_run(capsys, "setup", "--name=glm", ZONE, "--workers=2")
  printed += dry_run(capsys, "train", "--name=glm", ZONE, "--", "--config=configs/base.py",
                     "--workdir=gs://b/run")
  assert "ssh glm" in printed and "scp" in printed
  assert "host-key" not in printed and "StrictHostKeyChecking" not in printed


@pytest.mark.parametrize("argv, message", [
    (["create", "--name=glm", ZONE, "--accelerator=v9-8"], "--accelerator='v9-8' is not a TPU slice name"),
    (["create", "--name=glm", ZONE, "--accelerator=v5p-12"], "no standard v5p slice of that size"),
    (["create", "--name=glm", ZONE, "--accelerator=2xv5e-16"], "creates and runs one slice"),
    (["setup", "--name=glm", ZONE, "--accelerator=2xv5e-16"], "creates and runs one slice"),
    # A torus shape gcloud's type of that size does not have: never a different slice silently.
    (["create", "--name=glm", ZONE, "--accelerator=v5p:2x2x8"],
     "Cloud TPU's v5p-64 is v5p:2x4x4, not v5p:2x2x8"),
    (["create", "--name=glm", ZONE, "--accelerator=v5e:2x8"],
     "Cloud TPU's v5litepod-16 is v5e:4x4, not v5e:2x8"),
    (["create", "--name=glm", ZONE, "--accelerator=v5p:2x2x3"],
     "--accelerator=v5p:2x2x3: Cloud TPU has no accelerator type v5p-24 for this shape"),
    (["create", "--name=glm", "--accelerator=v5p-8"], "--zone is required"),
    (["create", ZONE, "--accelerator=v5p-8"], "--name is required"),
    # gcloud would take a region and answer from the API; a zone is its region and a letter.
    (["create", "--name=glm", "--zone=us-east5", "--accelerator=v5p-8"],
     "--zone=us-east5 is a region; name one of its zones, e.g. --zone=us-east5-a"),
    (["create", "--name=Bad_Name", ZONE, "--accelerator=v5p-8"], "--name='Bad_Name'"),
    # The whole name is checked, not only how it starts.
    (["create", "--name=glm_10b", ZONE, "--accelerator=v5p-8"], "--name='glm_10b'"),
    (["create", "--name=glm", ZONE, "--accelerator=v5p-8", "--spot", "--reserved"],
     "--reserved: not allowed with argument --spot"),
    (["setup", "--name=glm", ZONE], "setup needs --accelerator"),
    (["setup", "--name=glm", ZONE, "--workers=0"], "--workers=0: needs at least 1"),
    (["setup", "--name=glm", ZONE, "--workers=2", "--accelerator=v9x-8"],
     "--accelerator='v9x-8' is not a TPU slice name"),
    (["logs", "--name=glm", ZONE, "--lines=0"], "--lines=0: how many of the log's last lines"),
    (["setup", "--name=glm", ZONE, "--workers=1", "--mount-bucket=gs://my-bucket"],
     "--mount-bucket='gs://my-bucket': a bucket name, without gs://"),
    (["train", "--name=glm", ZONE, "--", "--config=c.py"], "train needs --workdir"),
    (["train", "--name=glm", ZONE, "--env", "NOT_SET_ANYWHERE_42", "--", "--workdir=gs://b"],
     "--env NOT_SET_ANYWHERE_42: NOT_SET_ANYWHERE_42 is not set"),
    (["train", "--name=glm", ZONE, "--env", "TOKEN=abc", "--", "--workdir=gs://b"],
     "--env TOKEN=...: --env takes a variable NAME, never a value"),
    (["stop", "--name=glm", ZONE, "--", "--workdir=x"], "stop takes no arguments after --"),
    # The trainer runs in ~/glmjax/code, which the next setup replaces (checkpoints and all).
    (["train", "--name=glm", ZONE, "--", "--workdir=runs/glm"],
     "--workdir=runs/glm: a relative path is read in ~/glmjax/code, which the next setup"),
    (["train", "--name=glm", ZONE, "--", "--workdir=~/runs/glm"],
     "--workdir=~/runs/glm: a relative path"),
    # Taken, a grace under 1 s would KILL the trainer right after the TERM, before its save.
    (["stop", "--name=glm", ZONE, "--grace=-1"], "--grace=-1: seconds between TERM and KILL"),
    (["train", "--name=glm", ZONE, "--grace=0", "--", "--workdir=gs://b/r"],
     "--grace=0: seconds between TERM and KILL, at least 1"),
])
def test_a_usage_error_is_one_line_naming_the_flag_with_exit_status_2(
    argv, message, capsys, monkeypatch):
  monkeypatch.delenv("NOT_SET_ANYWHERE_42", raising=False)
  assert tpu.main([argv[0], "--dry-run", *argv[1:]]) == 2
  captured = capsys.readouterr()
  assert captured.out == "" and captured.err.count("\n") == 1
  assert captured.err.startswith("launch/tpu.py: error: ") and message in captured.err
  assert "abc" not in captured.err  # a value given as --env NAME=VALUE is not echoed back


def test_without_gcloud_a_command_says_to_install_it_and_a_dry_run_still_prints(
    tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("PATH", str(tmp_path))  # no gcloud anywhere
  create = ["create", "--name=glm", ZONE, "--accelerator=v5p-8"]
  assert tpu.main(create) == 2
  assert "gcloud not found: install the Google Cloud CLI" in capsys.readouterr().err
  assert tpu.main(["create", "--dry-run", *create[1:]]) == 0
  assert capsys.readouterr().out.startswith("gcloud compute tpus tpu-vm create glm ")


def test_the_script_reports_a_usage_error_without_a_traceback():
  result = subprocess.run([sys.executable, TPU_PY, "create", "--dry-run", "--name=glm", ZONE,
                           "--accelerator=v5p-7"], capture_output=True, text=True, check=False)
  assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
  assert result.stderr.startswith("launch/tpu.py: error: --accelerator='v5p-7': no standard "
                                  "v5p slice of that size (standard: v5p-8, v5p-16, ")
  assert result.stderr.count("\n") == 1


# -------------------------------------------------------------------------------- worker counts

@pytest.mark.parametrize("accelerator, workers", [
    ("v4-8", 1), ("v4-32", 4), ("v5p-8", 1), ("v5p-16", 2), ("v5p-128", 16), ("v5litepod-4", 1),
    ("v5litepod-8", 1), ("v5litepod-16", 4), ("v5litepod-256", 64), ("v6e-8", 1), ("v6e-64", 16),
    ("v5p-384", 48), ("v5e-16", 4), ("v4-16", 2),
])
def test_the_worker_count_follows_from_the_accelerator_type(accelerator, workers):
  assert tpu.accelerator_workers(accelerator) == workers


def test_setup_plans_one_copy_and_install_per_worker_and_pins_the_local_jax(capsys):
  out = dry_run(capsys, "setup", "--name=glm", ZONE, "--accelerator=v5p-128").splitlines()
  assert sum(" scp " in line for line in out) == 16
  assert sum(" ssh " in line for line in out) == 16 + 1  # and one first, for the ssh key
  assert [f"--worker={w}" in out[3 + 2 * w] for w in range(16)] == [True] * 16
  assert f"'jax[tpu]=={importlib.metadata.version('jax')}'" in command_payload(out[4])
  explicit = dry_run(capsys, "setup", "--name=glm", ZONE, "--workers=3", "--accelerator=v5p-128")
  assert len(explicit.splitlines()) == 3 + 2 * 3  # --workers overrides the accelerator's count


def test_setup_reaches_the_project_s_vm_with_scp_as_with_ssh(capsys, monkeypatch):
  monkeypatch.setattr(tpu, "checkout_files", lambda: ["glmjax/train.py"])
  out = dry_run(capsys, "setup", "--name=glm", ZONE, "--project=p", "--workers=2").splitlines()
  copies = [line for line in out if " scp " in line]
  assert len(copies) == 2 and all("--project=p" in line for line in copies)
  assert all("--project=p" in line for line in out if " ssh " in line)


def test_an_empty_jax_version_leaves_jax_unpinned(capsys):
  out = dry_run(capsys, "setup", "--name=glm", ZONE, "--workers=1", "--jax-version=")
  payload = command_payload(out.splitlines()[-1])
  assert "'jax[tpu]'" in payload and "jax[tpu]==" not in payload


def test_v6e_gets_its_own_default_runtime(capsys):
  assert dry_run(capsys, "create", "--name=glm", ZONE, "--accelerator=v6e-8") == (
      "gcloud compute tpus tpu-vm create glm --zone=us-east5-a --accelerator-type=v6e-8 "
      "--version=v2-alpha-tpuv6e\n")


def test_train_with_a_check_of_0_s_starts_the_trainers_and_waits_for_none(capsys):
  out = dry_run(capsys, "train", "--name=glm", ZONE, "--check-s=0", "--",
                "--config=configs/base.py", "--workdir=gs://b/run")
  assert "setsid nohup" in out and "for _ in $(seq 0);" in out
