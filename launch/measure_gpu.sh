#!/usr/bin/env bash
# Every speed figure the project claims for one NVIDIA GPU (written for an H100 or H200, 80+
# GB), and the experiments that look for more. Every figure is one JSON line appended to
# $OUT/measure_gpu.jsonl, tagged with its run ("run": start time and pid) and part; the log is
# $OUT/measure_gpu.log, appended to as well.
#
#   OUT=/tmp/gpu-figures bash launch/measure_gpu.sh [PART ...]
#
# Parts, run in the order named (default: all, in this order):
#   core         GLM-2B at sequence 1024 as shipped (batch 8, remat=full): one compile
#   large        GLM-Large at 512 as shipped: pre-built vs pipeline-fed (1 min)
#   save         what a checkpoint save costs GLM-2B's and GLM-Large's steps: the transfer of
#                the state to host memory alone and beside a step, and an async save both ways
#                (estimated 3 min: four saves of GLM-2B's 23 GB reach the disk at about 2 GB/s),
#                jax's fetch, and the step compiled with the copy as one more output (about
#                4.5 min in all on an H200, estimated)
#   attention    the attention kernels alone at GLM-2B's shape (40 s)
#   sweep        GLM-2B: batch 16, 8 x remat none, minimal x tokamax, cudnn (2.3 min)
#   chunk        GLM-2B: train.loss_chunk 512, 1024, 2048 (1 min)
#   ceiling      the card's bf16 matmul rate and device-to-device copy bandwidth
#   profile      GLM-2B's best setting traced: device time by line, class and operation
#   profile_large  the same for GLM-Large's best setting
#   tune         GLM-2B's best setting, then as shipped: dropout masks drawn again in the
#                backward pass or kept (model.save_dropout_masks) (four trials, about 2 min)
#   tune_large   the same two ways for GLM-Large's best setting (two trials, about 1 min)
#   flags        GLM-2B's best setting with glmjax's XLA options, then with the dynamic-slice
#                fusion they turn off put back, then three XLA passes (five processes, 4 min)
#   unroll       GLM-2B's best setting with its layers unrolled (model.scan_layers=false; its
#                compile had not ended after 5.5 min on an H200: run it alone)
#   unroll_large GLM-Large's best setting (128 rows, minimal) with its layers unrolled (compiled
#                for an H200 on a 2-core VM in 2.5 min: an estimated 2-4 min in all)
#   large_sweep  GLM-Large: batch 32, 64, 128 x remat none, minimal
#   batch_2b     GLM-2B's best setting at 24 and 32 rows (about 1.5 min)
#   autotune     the tokamax kernel at GLM-2B's shape, default and autotuned (the search's
#                length is unknown: tokamax compiles every configuration it tries)
# core, large, attention, sweep and chunk took 448 s on an H200 on 2026-12-04, core and large
# with the saves now in `save` (docs/performance.md); a GPU loan's command may run 10 minutes,
# so a loan runs the parts it needs by name. A sweep logs each
# trial's figures as it ends, so a part cut short keeps what it measured.
# Needs what requirements.txt installs, plus tokamax
# for the tokamax kernel: tokamax 0.0.12 (PyPI's newest) builds its Mosaic GPU kernel with jax
# 0.10 only; jax 0.11 needs tokamax 0.0.13, not on PyPI on 2026-12-03: install it from source,
#   pip install "tokamax @ git+https://github.com/openxla/tokamax@783ea95704a581ea5b09c80d9d058c819cd8bf03"
# (checked on CPU with jax 0.11.2: glmjax's tokamax forward and backward lower for sm90). Without
# it `auto` logs the failure and measures cudnn. On a machine that has jax, flax, optax, orbax
# and chex but no network, `bash launch/gpu_wheels.sh` (run where pip reaches PyPI) puts in
# .whl the Python 3.12 wheels to install there with `pip install --no-index --no-deps`: glmjax's
# missing needs, tokamax 0.0.13 built from that commit, and what `import tokamax` needs beside
# such a machine's packages (about 35 MB, most of it xprof, which tokamax imports).
# The first run fills the compilation cache (see below), so its compile_s is a real compile
# and a rerun's a cache hit.
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
ALL_PARTS=(core large save attention sweep chunk ceiling profile profile_large tune tune_large
           flags unroll unroll_large large_sweep batch_2b autotune)
echo "== $run: measure_gpu.sh ${*:-${ALL_PARTS[*]}}" >> "$log"

# MEASURE_OVERRIDES: flags added to every bench call, for a rehearsal on a CPU with a tiny model
# (tests/test_bench.py runs one, so the script cannot break unseen between GPU sessions).
read -r -a overrides <<< "${MEASURE_OVERRIDES:-}"
bench() {  # python -m glmjax.bench ARGS; its JSON line goes to $figures, tagged with the run
  # and the part ($tag), the rest to $log after a "== RUN bench ARGS" line
  echo "== $run bench $* ${overrides[*]} (XLA_FLAGS=${XLA_FLAGS:-})" >> "$log"
  python3 -m glmjax.bench "$@" "${overrides[@]}" 2>> "$log" | tee -a "$log" | grep '^{' \
    | sed "s|^{|{\"run\": \"$run\", \"part\": \"$tag\", |" >> "$figures" \
    || echo "{\"run\": \"$run\", \"part\": \"$tag\", \"failed\": \"bench $*\"}" >> "$figures"
}

profiled_calls=0
profiled() {  # profiled PREFIX ARGS: bench --what=profile ARGS for 3 steps; this call's
  # Perfetto trace and optimized program are copied up to $OUT as PREFIX_trace.json.gz and
  # PREFIX_hlo.txt.gz (a part named twice: the later call's), as a GPU loan returns files at
  # most two folders down and 16 MiB each
  local prefix=$1 trace from kept
  shift
  profiled_calls=$((profiled_calls + 1))  # each call its own folder, so `find` sees only its trace
  local traces="$OUT/profile/${run//[ :]/_}_${prefix}_$profiled_calls"
  bench --what=profile "$@" --steps=3 --profile_dir="$traces"
  trace=$(find "$traces" -name perfetto_trace.json.gz | head -n 1)
  for kept in "$trace:${prefix}_trace.json.gz" "$traces/compiled_hlo.txt.gz:${prefix}_hlo.txt.gz"
  do
    from=${kept%:*}
    if [ -n "$from" ] && [ -f "$from" ] && [ "$(stat -c %s "$from")" -lt 16777216 ]; then
      cp "$from" "$OUT/${kept##*:}"
    else
      echo "$prefix: no ${kept##*:} of under 16 MiB to copy (${from:-none}); see $traces" \
        | tee -a "$log" >&2
    fi
  done
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$log" 2>&1
GLM_2B=(--config=configs/glm_2b.py --config.data.seq_len=1024 --config.model.max_position=1024
        --config.model.dtype=bfloat16 --config.mesh.data=1 --config.data.source=)
GLM_LARGE=(--config=configs/large.py --config.data.seq_len=512 --config.data.batch_size=32
           --config.model.dtype=bfloat16 --config.mesh.data=1 --config.data.source=builtin
           --config.data.tokenizer=byte --config.data.tokenizer_vocab=)
# GLM-2B's best setting on one H200 so far (2026-12-04: 40.6-40.8% MFU), as a sweep's one trial.
BEST_2B=(--config.data.batch_size=16 --sweep_batch=16 --sweep_remat=minimal
         --sweep_attention=tokamax)

parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=("${ALL_PARTS[@]}")
for part in "${parts[@]}"; do
  tag=$part
  case "$part" in
    core)       # GLM-2B, sequence 1024, batch 8, the config's remat, `auto` kernel: one compile
      bench --what=step "${GLM_2B[@]}" --config.data.batch_size=8 --steps=10 ;;
    attention)  # attention kernels alone at GLM-2B's shape (forward + backward, GLM mask)
      bench --what=attention "${GLM_2B[@]}" --config.data.batch_size=8 ;;
    sweep)      # GLM-2B, sequence 1024: batch x remat x kernel (target: MFU >= 0.50). Without
      # remat GLM-2B's batch 8 took 77 GiB on an H200 (batch 16: 122 GiB), so the likely
      # fastest settings come first: each trial's figures reach the log as it ends.
      bench --what=sweep "${GLM_2B[@]}" --config.data.batch_size=8 --sweep_batch=16,8 \
            --sweep_remat=none,minimal --sweep_attention=tokamax,cudnn ;;
    large)      # GLM-Large, sequence 512, batch 32: pre-built vs pipeline-fed (>= 0.40)
      bench --what=step "${GLM_LARGE[@]}" --steps=20 ;;
    save)       # a save's cost (target: under 10% of a step), GLM-2B as shipped, then GLM-Large;
      # the device snapshot in 16 parts, one per step (its largest step is the figure); the
      # compiles are cache hits after core and large
      bench --what=save "${GLM_2B[@]}" --config.data.batch_size=8 --steps=5 \
            --config.checkpoint.snapshot_parts=16
      bench --what=save "${GLM_LARGE[@]}" --steps=10 --config.checkpoint.snapshot_parts=16 ;;
    chunk)      # GLM-2B, sequence 1024, batch 8, remat=full, tokamax: the best train.loss_chunk
      bench --what=sweep "${GLM_2B[@]}" --config.data.batch_size=8 --sweep_batch=8 \
            --sweep_remat=full --sweep_attention=tokamax --sweep_loss_chunk=512,1024,2048 ;;
    ceiling)    # the card's bf16 matmul rate and copy bandwidth (seconds)
      bench --what=ceiling --ceiling_n="${MEASURE_MATMUL_N:-8192}" ;;
    profile)    # GLM-2B's best setting traced for 3 steps: device time by line, class and op
      profiled profile "${GLM_2B[@]}" --config.data.batch_size=16 --config.model.remat=minimal \
               --config.model.attention=tokamax ;;
    profile_large)  # GLM-Large's best setting (2026-12-04: 128 rows, remat=minimal) traced
      profiled profile_large "${GLM_LARGE[@]}" --config.data.batch_size=128 \
               --config.model.remat=minimal --config.model.attention=tokamax ;;
    tune)       # GLM-2B's best setting, then as shipped (batch 8, remat=full): the backward
      # pass draws both hidden-dropout masks of each layer again (threefry on every element),
      # or reads the masks the forward pass kept (a byte an element). Hidden dropout cost 4.6%
      # of the best setting's step, and the generator (threefry, rbg, unsafe_rbg) made no
      # difference (2026-12-04). The trials' losses must agree both ways (the same masks; in
      # bfloat16 the two programs round differently, so within a relative 1e-3, not exactly).
      bench --what=sweep "${GLM_2B[@]}" "${BEST_2B[@]}" \
            --sweep_set=model.save_dropout_masks=false,true
      bench --what=sweep "${GLM_2B[@]}" --config.data.batch_size=8 --sweep_batch=8 \
            --sweep_remat=full --sweep_attention=tokamax \
            --sweep_set=model.save_dropout_masks=false,true ;;
    tune_large)  # the same two ways for GLM-Large's best setting (128 rows, remat=minimal):
      # a third more mask elements a step than GLM-2B's 16 rows, for 3.0 GiB more memory
      bench --what=sweep "${GLM_LARGE[@]}" --config.data.batch_size=128 --sweep_batch=128 \
            --sweep_remat=minimal --sweep_attention=tokamax \
            --sweep_set=model.save_dropout_masks=false,true ;;
    flags)      # GLM-2B's best setting under glmjax's XLA options (glmjax/xla_options.py),
      # then with the one it turns off put back: the dynamic-slice fusion, which ran every
      # attention forward twice (2026-12-04 profile); then XLA's pass that leaves a loop's
      # stacks uninitialised where every slot is written (off by default; the zero fills took
      # 2.7% of the step; the trials' losses must not change); then three rewrites that may
      # take on the elementwise work and reductions (44% of the step outside matmuls and
      # attention): Triton block-level fusions and cuDNN GEMM fusions (bias, GeLU epilogues).
      # Triton GEMMs off, Triton only where XLA wants it, and cuBLASLt were tried before: none
      # gained. cuDNN LayerNorm kernels (--xla_gpu_enable_cudnn_layer_norm) are left out: jax
      # 0.11.2's XLA aborts on GLM-2B's step with them (a failed check in its LayerNorm
      # matcher, seen compiling for an H200; docs/performance.md). One process each, as XLA
      # reads its flags at start-up
      for flag in "" --xla_gpu_enable_dynamic_slice_fusion=true \
                  --xla_gpu_enable_dus_accumulator_zero_init_elimination=true \
                  --xla_gpu_experimental_enable_fusion_block_level_rewriter=true \
                  --xla_gpu_cudnn_gemm_fusion_level=2; do
        tag="flags ${flag:-(glmjax options)}"
        # Joined without a stray space: XLA reads an XLA_FLAGS of blanks as a file name to
        # open, and aborts.
        flags_now="${XLA_FLAGS:-}${XLA_FLAGS:+${flag:+ }}$flag"
        ( if [[ -n "$flags_now" ]]; then export XLA_FLAGS="$flags_now"; else unset XLA_FLAGS; fi
          bench --what=sweep "${GLM_2B[@]}" "${BEST_2B[@]}" )
      done ;;
    unroll)     # GLM-2B's best setting with the layers unrolled: no loop, so the saved
      # activations need no copy into the per-layer stacks (2.4% of the step in the 2026-12-04
      # profile); compiled for an H200 (jax 0.11.2, 2026-12-05) it moves 322.1 GiB a step
      # against 370.1 scanned, about 15 ms (3.5%) less at 3.34 TB/s. It compiles 36 layers
      # instead of one (4 minutes on a 2-core VM), which had not ended after 5.5 minutes on
      # an H200 (2026-12-04): give it a call of its own
      bench --what=sweep "${GLM_2B[@]}" "${BEST_2B[@]}" --sweep_set=model.scan_layers=false ;;
    unroll_large)  # the same for GLM-Large's best setting: compiled for an H200 (jax 0.11.2,
      # 2026-12-05), its program moves 338.9 GiB a step against 373.5 GiB scanned (no stack
      # writes, fills or reads; more copies around the attention calls and the MLP), about
      # 11 ms (2.9%) less at 3.34 TB/s; 24 layers compile in 2.5 minutes on a 2-core VM
      bench --what=sweep "${GLM_LARGE[@]}" --config.data.batch_size=128 --sweep_batch=128 \
            --sweep_remat=minimal --sweep_attention=tokamax \
            --sweep_set=model.scan_layers=false ;;
    large_sweep)  # GLM-Large, sequence 512: batch x remat, the levers for its 40% target
      bench --what=sweep "${GLM_LARGE[@]}" --sweep_batch=32,64,128 --sweep_remat=none,minimal \
            --sweep_attention=tokamax ;;
    batch_2b)   # GLM-2B's best setting (minimal, tokamax) at 24 and 32 rows: the step's fixed
      # costs (the optimizer's pass over the 23 GB state, the zero fills of gradient buffers
      # and stacks) spread over more tokens. 8 rows gave 36.9% MFU, 16 rows 40.8%; compiled
      # memory grew 12.1 GiB per 8 rows (40.8 and 52.9 GiB), so 24 rows need about 65 GiB and
      # 32 about 77 GiB (an H100's 80 GB holds the first only)
      bench --what=sweep "${GLM_2B[@]}" --config.data.batch_size=16 --sweep_batch=24,32 \
            --sweep_remat=minimal --sweep_attention=tokamax ;;
    autotune)   # tokamax's own autotuner on the attention kernel at GLM-2B's shape: the gain,
      # if any, that storing tuned configurations with a run would bring
      bench --what=attention "${GLM_2B[@]}" --config.data.batch_size=8 --attention_autotune ;;
    *) echo "unknown part '$part': use ${ALL_PARTS[*]}" >&2; exit 2 ;;
  esac
done
echo "figures: $figures (this run's below)"
grep -F "{\"run\": \"$run\", " "$figures"
