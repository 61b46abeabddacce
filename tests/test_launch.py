"""Launch scripts in dry-run mode print the commands they would run."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dry_run(*args):
  result = subprocess.run([sys.executable, os.path.join(REPO, "launch", "tpu.py"), "--dry-run",
                           *args], capture_output=True, text=True, check=True)
  return result.stdout.strip().splitlines()


def test_tpu_create_and_delete():
  (create,) = _dry_run("create", "--name=glm", "--zone=us-central2-b", "--accelerator=v4-32")
  assert create.startswith("gcloud compute tpus tpu-vm create glm --zone=us-central2-b")
  assert "--accelerator-type=v4-32" in create
  (delete,) = _dry_run("delete", "--name=glm", "--zone=z")
  assert "tpu-vm delete glm" in delete and "--quiet" in delete


def test_tpu_run_copies_code_and_starts_training_on_every_worker():
  tar, scp, ssh = _dry_run("run", "--name=glm", "--zone=z", "--", "--config=configs/large.py",
                           "--workdir=gs://bucket/run")
  assert tar.startswith("tar czf /tmp/glm-glmjax.tar.gz")
  assert "tpu-vm scp" in scp and "--worker=all" in scp
  assert "--worker=all" in ssh
  assert "python3 -m glmjax.train --config=configs/large.py --workdir=gs://bucket/run" in ssh
  # Only device holders are killed before starting, never every python process.
  assert "lsof -t /dev/accel*" in ssh and "pkill" not in ssh


def test_gpu_slurm_dry_run():
  result = subprocess.run(["bash", os.path.join(REPO, "launch", "gpu_slurm.sh"),
                           "--config=configs/glm_2b.py", "--workdir=/shared/run"],
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "DRY_RUN": "1"})
  assert result.stdout.strip() == ("srun --kill-on-bad-exit=1 python3 -m glmjax.train "
                                   "--config=configs/glm_2b.py --workdir=/shared/run")
