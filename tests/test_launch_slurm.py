"""launch/gpu_slurm.sh: one process per node or per GPU, each seeing the right GPUs; quoting;
a checkpoint and a requeue before the time limit."""
import glob
import os
import shlex
import signal
import subprocess
import time

import pytest
from launch_stubs import NASTY, make_stub, never_the_real_gcloud_or_srun  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLURM_SH = os.path.join(REPO, "launch", "gpu_slurm.sh")


def slurm(procs=None, *args, task_env=None, dry=True, extra_path=None):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "CUDA_", "GLMJAX_", "PROCS", "DRY_RUN", "JAX_"))}
  env.update({"PROCS": procs} if procs else {})
  env.update({"DRY_RUN": "1"} if dry else {})
  env.update(task_env or {})
  if extra_path:
    env["PATH"] = f"{extra_path}:{env['PATH']}"
  return subprocess.run(["bash", SLURM_SH, *args], capture_output=True, text=True, env=env,
                        check=False, timeout=30)


def test_slurm_one_process_per_node_dry_run(tmp_path):
  result = slurm(None, "--config=configs/glm_2b.py", "--workdir=/shared/run")
  assert result.returncode == 0, result.stderr
  assert result.stdout == (
      "# PROCS=node: one process per node (sbatch --ntasks-per-node=1), all its GPUs each\n"
      f"srun --export=ALL --kill-on-bad-exit=1 bash {REPO}/launch/gpu_slurm.sh --config=configs/glm_2b.py "
      "--workdir=/shared/run\n")
  # Each task then gives jax every GPU of its node, not only GPU SLURM_LOCALID=0.
  task = slurm("node", "--config=configs/glm_2b.py", task_env={
      "GLMJAX_SLURM_TASK": "1", "SLURM_LOCALID": "0", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"})
  assert task.stdout == ("JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7 python3 -m glmjax.train "
                         "--config=configs/glm_2b.py\n")


def test_slurm_one_process_per_gpu_dry_run():
  result = slurm("gpu", "--config=configs/glm_2b.py", "--workdir=/shared/run")
  assert result.stdout == (
      "# PROCS=gpu: one process per GPU (sbatch --ntasks-per-node=GPUS_PER_NODE)\n"
      f"srun --export=ALL --kill-on-bad-exit=1 bash {REPO}/launch/gpu_slurm.sh --config=configs/glm_2b.py "
      "--workdir=/shared/run\n")
  all_visible = slurm("gpu", "--config=c", task_env={
      "GLMJAX_SLURM_TASK": "1", "SLURM_LOCALID": "5", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"})
  assert all_visible.stdout == "JAX_LOCAL_DEVICE_IDS=5 python3 -m glmjax.train --config=c\n"
  bound = slurm("gpu", "--config=c", task_env={  # SLURM gave the task one GPU of its own
      "GLMJAX_SLURM_TASK": "1", "SLURM_LOCALID": "5", "CUDA_VISIBLE_DEVICES": "5"})
  assert bound.stdout == "JAX_LOCAL_DEVICE_IDS=0 python3 -m glmjax.train --config=c\n"


@pytest.mark.parametrize("procs, task_env, message", [
    ("node", {"SLURM_LOCALID": "1", "CUDA_VISIBLE_DEVICES": "0,1"}, "--ntasks-per-node=1"),
    ("gpu", {"SLURM_LOCALID": "3", "CUDA_VISIBLE_DEVICES": "0,1"}, "only 2 GPUs"),
    ("gpu", {"SLURM_LOCALID": "2", "CUDA_VISIBLE_DEVICES": "0,1"}, "only 2 GPUs"),  # ids 0, 1
    ("tpu", {}, "PROCS=tpu: use PROCS=node or PROCS=gpu"),
])
def test_a_slurm_layout_mismatch_stops_with_one_line(procs, task_env, message):
  result = slurm(procs, "--config=c", task_env={"GLMJAX_SLURM_TASK": "1", **task_env})
  assert result.returncode == 2 and message in result.stderr
  assert result.stderr.count("\n") == 1 and result.stdout == ""


@pytest.mark.parametrize("task_env, message", [
    # PROCS=gpu under the script's own --ntasks-per-node=1: one task would drive GPU 0 alone.
    ({"SLURM_LOCALID": "0", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
      "SLURM_STEP_TASKS_PER_NODE": "1(x4)"}, "1 task(s) on"),
    # 8 tasks on a node given one GPU (--gpus-per-node=1): all would share it.
    ({"SLURM_LOCALID": "3", "CUDA_VISIBLE_DEVICES": "0", "SLURM_GPUS_ON_NODE": "1",
      "SLURM_STEP_TASKS_PER_NODE": "8(x2)"}, "8 task(s) on"),
    # A node whose share of an uneven task list is short: the third node of "8,8,7".
    ({"SLURM_LOCALID": "0", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7", "SLURM_NODEID": "2",
      "SLURM_TASKS_PER_NODE": "8(x2),7"}, "7 task(s) on"),
])
def test_one_process_per_gpu_refuses_a_node_whose_tasks_are_not_its_gpus(task_env, message):
  result = slurm("gpu", "--config=c", task_env={"GLMJAX_SLURM_TASK": "1", **task_env})
  assert result.returncode == 2 and result.stdout == "" and result.stderr.count("\n") == 1
  assert message in result.stderr and "--ntasks-per-node=" in result.stderr


@pytest.mark.parametrize("task_env, ids", [
    ({"SLURM_LOCALID": "5", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
      "SLURM_STEP_TASKS_PER_NODE": "8(x4)", "SLURM_NODEID": "3"}, "5"),
    ({"SLURM_LOCALID": "5", "CUDA_VISIBLE_DEVICES": "5", "SLURM_GPUS_ON_NODE": "8",
      "SLURM_STEP_TASKS_PER_NODE": "8,8"}, "0"),  # --gpus-per-task=1: bound by SLURM
    ({"SLURM_LOCALID": "5", "CUDA_VISIBLE_DEVICES": "5",
      "SLURM_STEP_TASKS_PER_NODE": "8(x2)"}, "0"),  # bound, and SLURM's GPU count not said
])
def test_one_process_per_gpu_runs_when_each_gpu_has_its_task(task_env, ids):
  result = slurm("gpu", "--config=c", task_env={"GLMJAX_SLURM_TASK": "1", **task_env})
  assert result.returncode == 0, result.stderr
  assert result.stdout == f"JAX_LOCAL_DEVICE_IDS={ids} python3 -m glmjax.train --config=c\n"


def test_without_cuda_visible_devices_the_gpus_are_counted_from_nvidia_smi_s_gpu_lines(tmp_path):
  # A MIG-partitioned node lists its instances indented under each GPU: they are not GPUs.
  make_stub(str(tmp_path / "bin" / "nvidia-smi"), "printf '%s\\n' "
            "'GPU 0: NVIDIA H100 (UUID: GPU-a)' '  MIG 1g.10gb Device 0: (UUID: MIG-a)' "
            "'GPU 1: NVIDIA H100 (UUID: GPU-b)' '  MIG 1g.10gb Device 0: (UUID: MIG-b)'")
  task = slurm("node", "--config=c", task_env={"GLMJAX_SLURM_TASK": "1", "SLURM_LOCALID": "0"},
               extra_path=str(tmp_path / "bin"))
  assert task.stdout == "JAX_LOCAL_DEVICE_IDS=0,1 python3 -m glmjax.train --config=c\n", task.stderr


def test_a_slurm_argument_with_shell_metacharacters_reaches_the_trainer_as_one_word(tmp_path):
  nasty = [word.format(tmp=tmp_path) for word in NASTY]
  printed = slurm("node", "--config=c", *nasty).stdout.split("\n", 1)[1]
  assert shlex.split(printed)[-len(nasty):] == nasty
  # Really run: a stand-in srun starts the task, which execs a stand-in trainer.
  make_stub(str(tmp_path / "bin" / "srun"),
            'while [ "$1" != bash ]; do shift; done; SLURM_LOCALID=0 exec "$@"')
  make_stub(str(tmp_path / "trainer"),
            f'printf "%s\\0" "$JAX_LOCAL_DEVICE_IDS" "$@" > {shlex.quote(str(tmp_path / "argv"))}')
  result = slurm("node", "--config=c", *nasty, dry=False, extra_path=tmp_path / "bin",
                 task_env={"CUDA_VISIBLE_DEVICES": "0,1,2,3", "PYTHON": str(tmp_path / "trainer")})
  assert result.returncode == 0, result.stderr
  assert (tmp_path / "argv").read_text().split("\0")[:-1] == [
      "0,1,2,3", "-m", "glmjax.train", "--config=c", *nasty]
  assert not glob.glob(str(tmp_path / "pwned*"))


def test_jax_alone_would_give_a_one_process_per_node_task_only_gpu_0(monkeypatch):
  """Why gpu_slurm.sh sets JAX_LOCAL_DEVICE_IDS: jax maps SLURM_LOCALID to one device, and reads
  JAX_LOCAL_DEVICE_IDS before that. If jax changes either, this fails: look at the script again."""
  from jax._src import clusters, distributed  # pylint: disable=import-outside-toplevel
  for key in list(os.environ):
    if key.startswith(("SLURM_", "OMPI_", "PMI_", "JAX_")):
      monkeypatch.delenv(key)
  monkeypatch.setattr(clusters.cluster, "running_in_cloud_tpu_vm", False, raising=False)
  for key, value in dict(SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="gpu[001-004]",
                         SLURM_NTASKS="4", SLURM_PROCID="0", SLURM_LOCALID="0").items():
    monkeypatch.setenv(key, value)
  _, processes, _, device_ids = clusters.ClusterEnv.auto_detect_unset_distributed_params(
      None, None, None, None, None, 60)
  assert (processes, device_ids) == (4, [0])
  seen = {}

  def capture(cls, coordinator, num_processes, process_id, local_device_ids, *rest):
    seen["local_device_ids"] = local_device_ids
    raise RuntimeError("captured")

  monkeypatch.setattr(clusters.ClusterEnv, "auto_detect_unset_distributed_params",
                      classmethod(capture))
  monkeypatch.setenv("JAX_LOCAL_DEVICE_IDS", "0,1,2,3,4,5,6,7")
  with pytest.raises(RuntimeError, match="captured"):
    distributed.State().initialize()
  assert seen["local_device_ids"] == list(range(8))


def batch_job(tmp_path, task: str, warn: bool, stop: bool = False) -> tuple[int, list[str]]:
  """Runs gpu_slurm.sh as SLURM's batch shell with stand-ins, optionally sends it the time-limit
  warning (sbatch --signal=B:USR1@...) or has a user stop the job (`scancel --signal=TERM JOB`:
  TERM to the step's tasks), and returns its exit status and what happened in order.

  The stand-ins do what SLURM does: srun KILLs its tasks when it gets TERM itself; scancel
  --signal=TERM JOB signals the tasks of the job's steps (slurmstepd), not srun."""
  events, step_pid = tmp_path / "events", tmp_path / "step.pid"
  log = f'>> {shlex.quote(str(events))}'
  make_stub(str(tmp_path / "task"), f"""
trap 'echo "{task} on TERM" {log}; [ {task} = saves ] && exit 0; exit 1' TERM
for _ in $(seq 200); do [ {task} = finishes ] && break; sleep 0.05; done
echo "trained to the end" {log}""")
  make_stub(str(tmp_path / "bin" / "srun"), f"""
trap 'echo "srun got TERM: tasks KILLed" {log}; kill -KILL $task; exit 143' TERM
{shlex.quote(str(tmp_path / "task"))} & task=$!
echo $task > {shlex.quote(str(step_pid))}
wait $task; status=$?
echo "srun: step ended with $status" {log}
exit $status""")
  make_stub(str(tmp_path / "bin" / "scancel"),
            f'echo "scancel $*" {log}; kill -TERM "$(cat {shlex.quote(str(step_pid))})"')
  make_stub(str(tmp_path / "bin" / "scontrol"), f'echo "scontrol $*" {log}')
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "GLMJAX_", "DRY_"))}
  env.update(SLURM_JOB_ID="4242", PATH=f"{tmp_path / 'bin'}:{env['PATH']}")
  job = subprocess.Popen(["bash", SLURM_SH, "--config=c", "--workdir=/shared/run"], env=env)
  try:
    deadline = time.time() + 10
    while not step_pid.exists():  # the step has started
      assert time.time() < deadline and job.poll() is None, "srun never started"
      time.sleep(0.02)
    if warn:
      time.sleep(0.2)
      job.send_signal(signal.SIGUSR1)
    if stop:
      time.sleep(0.2)
      os.kill(int(step_pid.read_text()), signal.SIGTERM)
    status = job.wait(timeout=30)
  finally:
    job.kill()
  return status, events.read_text().splitlines() if events.exists() else []


def test_a_time_limit_warning_checkpoints_the_step_then_requeues_the_job(tmp_path):
  assert batch_job(tmp_path, "saves", warn=True) == (0, [
      "scancel --signal=TERM 4242", "saves on TERM", "srun: step ended with 0",
      "scontrol requeue 4242"])


def test_a_job_whose_training_ends_or_fails_to_save_is_not_requeued(tmp_path):
  assert batch_job(tmp_path / "a", "finishes", warn=False) == (0, [
      "trained to the end", "srun: step ended with 0"])
  assert batch_job(tmp_path / "b", "fails", warn=True) == (1, [
      "scancel --signal=TERM 4242", "fails on TERM", "srun: step ended with 1"])


def test_a_user_s_scancel_signal_term_saves_and_ends_the_job_without_a_requeue(tmp_path):
  assert batch_job(tmp_path, "saves", warn=False, stop=True) == (0, [
      "saves on TERM", "srun: step ended with 0"])
