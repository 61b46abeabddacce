#!/usr/bin/env bash
# One pass of every speed figure the project claims for one NVIDIA GPU (written for an H100 or
# H200, 80+ GB): the attention kernels at GLM-2B's shape, a sweep of GLM-2B at sequence 1024
# (batch, remat, kernel), and GLM-Large at sequence 512 with the data pipeline and an async
# save. Every figure is one JSON line in $OUT/measure_gpu.jsonl; the log is $OUT/measure_gpu.log.
#
#   OUT=/tmp/gpu-figures bash launch/measure_gpu.sh
#
# Needs what requirements.txt installs, plus tokamax (and its xprof) for the tokamax kernel.
# Takes about 10 minutes on an H100 (each GLM-2B compile is most of a minute). Record the
# figures in docs/performance.md with the date, the card and this command.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/glmjax-gpu-figures}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 JAX_COMPILATION_CACHE_DIR="$OUT/xla_cache"
figures="$OUT/measure_gpu.jsonl"
log="$OUT/measure_gpu.log"
: > "$figures"

bench() {  # python -m glmjax.bench ARGS; its JSON line goes to $figures, the rest to $log
  echo "== bench $*" >> "$log"
  python3 -m glmjax.bench "$@" 2>> "$log" | tee -a "$log" | grep '^{' >> "$figures" \
    || echo "{\"failed\": \"bench $*\"}" >> "$figures"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$log" 2>&1
GLM_2B=(--config=configs/glm_2b.py --config.data.seq_len=1024 --config.model.max_position=1024
        --config.model.dtype=bfloat16 --config.mesh.data=1 --config.data.source=)
GLM_LARGE=(--config=configs/large.py --config.data.seq_len=512 --config.data.batch_size=32
           --config.model.dtype=bfloat16 --config.mesh.data=1 --config.data.source=builtin
           --config.data.tokenizer=byte --config.data.tokenizer_vocab=)

# 1. Attention kernels alone at GLM-2B's shape (forward + backward, GLM mask).
bench --what=attention "${GLM_2B[@]}" --config.data.batch_size=8
# 2. GLM-2B, sequence 1024: the sweep picks batch, remat and kernel (target: MFU >= 0.50).
bench --what=sweep "${GLM_2B[@]}" --config.data.batch_size=8 --sweep_batch=8,16 \
      --sweep_remat=minimal,full --sweep_attention=tokamax,cudnn
# 3. GLM-Large, sequence 512, batch 32: pre-built vs pipeline-fed, async save (target >= 0.40).
bench --what=step "${GLM_LARGE[@]}" --steps=20
echo "figures: $figures"
cat "$figures"
