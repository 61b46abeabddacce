#!/usr/bin/env bash
# One pass of every speed figure the project claims for one NVIDIA GPU (written for an H100 or
# H200, 80+ GB): the attention kernels at GLM-2B's shape, a sweep of GLM-2B at sequence 1024
# (batch, remat, kernel), GLM-Large at sequence 512 with the data pipeline and an async save,
# and GLM-2B's best train.loss_chunk (at remat=full with tokamax: the part needs tokamax). Every
# figure is one JSON line appended to $OUT/measure_gpu.jsonl, tagged with its run ("run": start
# time and pid); the log is $OUT/measure_gpu.log, appended to as well.
#
#   OUT=/tmp/gpu-figures bash launch/measure_gpu.sh [core] [large] [attention] [sweep] [chunk]
#
# Names the parts to run (default: all five, in that order: the two MFU targets first, each one
# compile, so a loan cut short still leaves them; then the kernels alone, the long sweep and the
# loss chunk).
# Needs what requirements.txt installs, plus tokamax
# for the tokamax kernel: tokamax 0.0.12 (PyPI's newest) builds its Mosaic GPU kernel with jax
# 0.10 only; jax 0.11 needs tokamax 0.0.13, not on PyPI on 2026-12-03: install it from source,
#   pip install "tokamax @ git+https://github.com/openxla/tokamax@783ea95704a581ea5b09c80d9d058c819cd8bf03"
# (checked on CPU with jax 0.11.2: glmjax's tokamax forward and backward lower for sm90). Without
# it `auto` logs the failure and measures cudnn. On a machine that has jax, flax, optax, orbax
# and chex but no network, install with `pip install --no-deps` these Python 3.12 wheels (about
# 35 MB, most of it xprof, which tokamax imports): ml_collections tensorboardX, tokamax 0.0.13
# built from that commit (`pip wheel --no-deps`), einshape pydantic pydantic-core
# annotated-types typing-inspection qwix typeguard==2.13.3 immutabledict, and xprof>=2.23.1
# (its manylinux_2_27 wheel) with fire and termcolor, the only ones of its own dependencies
# that `import tokamax` needs beside what such a machine has (checked 2026-12-04 in a Python
# 3.12 venv with jax 0.11.2; jaxtyping, wadler-lindig, tqdm and six are on the GPU machine).
# Not yet timed on a GPU: expect about 2 minutes for `core`, 2 for
# `attention`, 8-12 for `sweep` (8 GLM-2B compiles of most of a minute each, each after a
# start-up check of its kernel against xla, then 5 steps), 3 for `large` and 3-4 for `chunk`
# (3 compiles); where one command may run at most 10 minutes, run the parts one by one. The
# first run fills $OUT/xla_cache, so its compile_s is a real compile and a rerun's a cache hit.
# Record the figures in docs/performance.md with the date, the card and this command.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/glmjax-gpu-figures}
mkdir -p "$OUT"
# The compilation cache lives in $OUT unless the caller puts it elsewhere (a GPU loan returns only
# a few files from its output folder, so there it goes outside).
export PYTHONUNBUFFERED=1 JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$OUT/xla_cache}"
figures="$OUT/measure_gpu.jsonl"
log="$OUT/measure_gpu.log"
# Both files are appended to, never emptied: the parts are often run one at a time, and each
# run's figures must survive the next. Every figure carries the run ("run": its start time and
# process id, as two runs may start in the same second) and every bench call's log section
# starts with a "== RUN bench ..." line, so runs stay apart.
run="$(date -u +%Y-%m-%dT%H:%M:%SZ) pid $$"
echo "== $run: measure_gpu.sh ${*:-core large attention sweep chunk}" >> "$log"

# MEASURE_OVERRIDES: flags added to every bench call, for a rehearsal on a CPU with a tiny model
# (tests/test_bench.py runs one, so the script cannot break unseen between GPU sessions).
read -r -a overrides <<< "${MEASURE_OVERRIDES:-}"
bench() {  # python -m glmjax.bench ARGS; its JSON line goes to $figures, the rest to $log
  echo "== $run bench $* ${overrides[*]}" >> "$log"
  python3 -m glmjax.bench "$@" "${overrides[@]}" 2>> "$log" | tee -a "$log" | grep '^{' \
    | sed "s/^{/{\"run\": \"$run\", /" >> "$figures" \
    || echo "{\"run\": \"$run\", \"failed\": \"bench $*\"}" >> "$figures"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$log" 2>&1
GLM_2B=(--config=configs/glm_2b.py --config.data.seq_len=1024 --config.model.max_position=1024
        --config.model.dtype=bfloat16 --config.mesh.data=1 --config.data.source=)
GLM_LARGE=(--config=configs/large.py --config.data.seq_len=512 --config.data.batch_size=32
           --config.model.dtype=bfloat16 --config.mesh.data=1 --config.data.source=builtin
           --config.data.tokenizer=byte --config.data.tokenizer_vocab=)

parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(core large attention sweep chunk)
for part in "${parts[@]}"; do
  case "$part" in
    core)       # GLM-2B, sequence 1024, batch 8, the config's remat, `auto` kernel: one compile
      bench --what=step "${GLM_2B[@]}" --config.data.batch_size=8 --steps=10 ;;
    attention)  # attention kernels alone at GLM-2B's shape (forward + backward, GLM mask)
      bench --what=attention "${GLM_2B[@]}" --config.data.batch_size=8 ;;
    sweep)      # GLM-2B, sequence 1024: batch x remat x kernel (target: MFU >= 0.50). Without
      # remat GLM-2B's batch 8 needs about 55 GB (32 of them parameters and Adam moments), so
      # the likely fastest settings come first: each trial's figures reach the log as it ends.
      bench --what=sweep "${GLM_2B[@]}" --config.data.batch_size=8 --sweep_batch=16,8 \
            --sweep_remat=none,minimal --sweep_attention=tokamax,cudnn ;;
    large)      # GLM-Large, sequence 512, batch 32: pre-built vs pipeline-fed, async save (>= 0.40)
      bench --what=step "${GLM_LARGE[@]}" --steps=20 ;;
    chunk)      # GLM-2B, sequence 1024, batch 8, remat=full, tokamax: the best train.loss_chunk
      bench --what=sweep "${GLM_2B[@]}" --config.data.batch_size=8 --sweep_batch=8 \
            --sweep_remat=full --sweep_attention=tokamax --sweep_loss_chunk=512,1024,2048 ;;
    *) echo "unknown part '$part': use core, large, attention, sweep or chunk" >&2; exit 2 ;;
  esac
done
echo "figures: $figures (this run's below)"
grep -F "{\"run\": \"$run\", " "$figures"
