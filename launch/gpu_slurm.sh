#!/usr/bin/env bash
# GPU cluster launch with SLURM: one process per node, all local GPUs per process.
#   sbatch --nodes=4 --gpus-per-node=8 launch/gpu_slurm.sh --config=configs/glm_2b.py --workdir=/shared/glm2b
#   DRY_RUN=1 bash launch/gpu_slurm.sh --config=...   # print the command instead of running it
# jax.distributed.initialize() reads the SLURM environment (see glmjax/parallel.py).
#SBATCH --job-name=glmjax
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
set -euo pipefail
cd "$(dirname "$0")/.."
command=(srun --kill-on-bad-exit=1 python3 -m glmjax.train "$@")
if [[ "${DRY_RUN:-0}" == "1" ]]; then
  echo "${command[@]}"
else
  exec "${command[@]}"
fi
