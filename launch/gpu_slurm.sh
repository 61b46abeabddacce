#!/usr/bin/env bash
# GPU clusters with SLURM. Two layouts, chosen with PROCS (default node):
#   PROCS=node  one process per node, driving all of that node's GPUs:
#     sbatch --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 launch/gpu_slurm.sh \
#         --config=configs/glm_2b.py --workdir=/shared/glm2b --config.data.source=prepared \
#         --config.data.prepared_dir=/shared/prepared \
#         --config.data.tokenizer_path=/shared/tokenizer.json
#   PROCS=gpu   one process per GPU:
#     PROCS=gpu sbatch --nodes=4 --ntasks-per-node=8 --gpus-per-node=8 launch/gpu_slurm.sh \
#         --config=configs/glm_2b.py --workdir=/shared/glm2b --config.data.source=prepared \
#         --config.data.prepared_dir=/shared/prepared \
#         --config.data.tokenizer_path=/shared/tokenizer.json
# Submit from the repository root on a shared filesystem (sbatch runs a spooled copy of this
# script, so its own path does not lead to the checkout), or set GLMJAX_DIR. PYTHON picks the
# interpreter (default python3). DRY_RUN=1 prints the command instead of running it.
# To continue past the time limit, add: --signal=B:USR1@300 --requeue --open-mode=append
# (the trainers save a checkpoint 300 s before it, then the job is requeued and resumes).
# To stop a job with a checkpoint: scancel --signal=TERM JOBID (a plain scancel also signals
# srun, which KILLs the trainers before they can save).
#
# How the processes find their GPUs: jax.distributed.initialize() reads the SLURM environment
# and, unless told otherwise, restricts each process to GPU number SLURM_LOCALID, which with one
# process per node would be GPU 0 alone. So srun starts this script once per task, and each task
# sets JAX_LOCAL_DEVICE_IDS before starting the trainer: every visible GPU (PROCS=node), or its
# own GPU (PROCS=gpu; index 0 when SLURM already bound a single GPU to the task).
#SBATCH --job-name=glmjax
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
set -euo pipefail

fail() { echo "gpu_slurm.sh: $*" >&2; exit 2; }
procs="${PROCS:-node}"
[[ "$procs" == node || "$procs" == gpu ]] || fail "PROCS=$procs: use PROCS=node or PROCS=gpu"
repo="${GLMJAX_DIR:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}"
[[ -d "$repo/glmjax" ]] || fail "no glmjax checkout in $repo: submit from the repository root" \
                                "or set GLMJAX_DIR"
cd "$repo"

quote() {  # like Python's shlex.quote: bare when safe, else single-quoted
  if [[ -n "$1" && "$1" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then printf '%s' "$1"
  else local sq="'\"'\"'"; printf "'%s'" "${1//\'/$sq}"; fi
}
show() {  # the command as one shell-quoted line
  local sep=""
  for word in "$@"; do printf '%s' "$sep"; quote "$word"; sep=" "; done
  printf '\n'
}

if [[ "${GLMJAX_SLURM_TASK:-0}" != 1 ]]; then  # batch step: one srun, a task per process
  export GLMJAX_SLURM_TASK=1 PROCS="$procs"
  # --export=ALL: a site whose sbatch default is --export=NONE would otherwise start tasks
  # without GLMJAX_SLURM_TASK, each then asking srun for the whole allocation again.
  command=(srun --export=ALL --kill-on-bad-exit=1 bash "$repo/launch/gpu_slurm.sh" "$@")
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    if [[ "$procs" == node ]]; then
      echo "# PROCS=node: one process per node (sbatch --ntasks-per-node=1), all its GPUs each"
    else
      echo "# PROCS=gpu: one process per GPU (sbatch --ntasks-per-node=GPUS_PER_NODE)"
    fi
    show "${command[@]}"
    exit 0
  fi
  # No exec: this shell stays to hear the time-limit warning of `sbatch --signal=B:USR1@300`
  # (B: this shell alone). It then TERMs the training step through scancel, not by signalling
  # srun: srun answers a TERM by KILLing its tasks, which would die without a checkpoint. The
  # tasks save and exit 0, and the job asks to be requeued (sbatch --requeue), so it resumes
  # from the workdir; a job whose training just ended is not requeued.
  warned=0
  on_warning() {
    warned=1
    echo "gpu_slurm.sh: time limit near: TERM to the training step, requeue after its save" >&2
    scancel --signal=TERM "${SLURM_JOB_ID:?}" || true  # all steps but this batch shell
  }
  trap on_warning USR1
  "${command[@]}" &
  step=$!
  while kill -0 "$step" 2>/dev/null; do  # a trapped signal ends `wait` early
    wait "$step" || true
  done
  # srun's own status: bash keeps it for a second `wait`, also when srun ended while the trap
  # ran and the `wait` above returned the signal's status instead.
  status=0
  wait "$step" || status=$?
  if ((warned && status == 0)); then
    scontrol requeue "$SLURM_JOB_ID"
  fi
  exit "$status"
fi

# One srun task: choose this process's GPUs, then become the trainer.
tasks_here() {  # this node's task count, from SLURM's "8(x4)" or "8,8,7" lists; none if unsaid
  local spec="${SLURM_STEP_TASKS_PER_NODE:-${SLURM_TASKS_PER_NODE:-}}" node="${SLURM_NODEID:-0}"
  local part n reps parts
  IFS=, read -ra parts <<< "$spec"
  for part in ${parts[@]+"${parts[@]}"}; do  # bash 4.2's set -u refuses an empty "${a[@]}"
    if [[ "$part" =~ ^([0-9]+)\(x([0-9]+)\)$ ]]; then n=${BASH_REMATCH[1]} reps=${BASH_REMATCH[2]}
    elif [[ "$part" =~ ^[0-9]+$ ]]; then n=$part reps=1
    else return 0; fi
    if ((node < reps)); then echo "$n"; return 0; fi
    node=$((node - reps))
  done
}
if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
  IFS=, read -ra visible <<< "$CUDA_VISIBLE_DEVICES"
  count=${#visible[@]}
else
  count=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
((count > 0)) || fail "no GPU visible on $(hostname) (CUDA_VISIBLE_DEVICES and nvidia-smi)"
local_id="${SLURM_LOCALID:-0}"
if [[ "$procs" == node ]]; then
  ((local_id == 0)) || fail "PROCS=node but $(hostname) runs several tasks: submit with" \
                            "--ntasks-per-node=1, or use PROCS=gpu"
  ids=$(seq -s, 0 $((count - 1)))
else
  # A task per GPU of the node: fewer tasks would leave GPUs idle, more would share one. The
  # node's GPUs: SLURM's count, else what this task sees unless SLURM bound it one GPU.
  tasks=$(tasks_here)
  gpus="${SLURM_GPUS_ON_NODE:-}"
  [[ "$gpus" =~ ^[0-9]+$ ]] || gpus=""  # a count, or not said
  if [[ -z "$gpus" ]] && ((count > 1)); then gpus=$count; fi
  if [[ -n "$tasks" && -n "$gpus" && "$tasks" != "$gpus" ]]; then
    fail "PROCS=gpu: $tasks task(s) on $(hostname) for its $gpus GPUs: submit with" \
         "--ntasks-per-node=$gpus (one task per GPU)"
  fi
  if ((count == 1)); then
    ids=0  # SLURM bound one GPU to this task (--gpus-per-task=1 or --gpu-bind)
  elif ((local_id < count)); then
    ids=$local_id
  else
    fail "PROCS=gpu: task $local_id on $(hostname) but only $count GPUs: submit with" \
         "--ntasks-per-node equal to --gpus-per-node"
  fi
fi
export JAX_LOCAL_DEVICE_IDS="$ids"
command=("${PYTHON:-python3}" -m glmjax.train "$@")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf 'JAX_LOCAL_DEVICE_IDS=%s ' "$ids"
  show "${command[@]}"
  exit 0
fi
exec "${command[@]}"
