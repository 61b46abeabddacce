#!/usr/bin/env bash
# The wheels a GPU machine without network needs beside its own image (Python 3.12, jax 0.11
# with CUDA, flax, optax, orbax, chex, jaxtyping, tokenizers, sentencepiece) to run glmjax and
# launch/measure_gpu.sh with the tokamax kernel. Run it where pip reaches PyPI; the folder
# (default .whl, which git ignores) then travels to the GPU machine, where
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site
# installs them without resolving anything (the image's own packages are used as they are).
#
#   bash launch/gpu_wheels.sh [TOKAMAX_SOURCE]
#
# TOKAMAX_SOURCE: a folder holding openxla/tokamax at the commit below (tokamax 0.0.13 is not on
# PyPI, and 0.0.12 does not build its GPU kernel with jax 0.11); without one, pip fetches that
# commit from GitHub. Every wheel is pinned: these are the versions checked together (a Python
# 3.12 environment holding only the image's packages, these wheels installed as above, then
# launch/measure_gpu.sh rehearsed on its CPU with a tiny model: docs/performance.md, session 26).
# About 35 MB, most of it xprof, which tokamax imports.
set -euo pipefail
TOKAMAX_COMMIT=783ea95704a581ea5b09c80d9d058c819cd8bf03
# Paths given relative to where the script was started from, before it moves to the repo root
if [[ -n "${DEST:-}" ]]; then mkdir -p "$DEST" && DEST=$(cd "$DEST" && pwd); fi
source=""
if [[ $# -gt 0 ]]; then
  if [[ ! -d "$1" ]]; then
    echo "gpu_wheels.sh: $1 is not a folder: give a checkout of openxla/tokamax at" \
         "$TOKAMAX_COMMIT, or nothing to fetch that commit from GitHub" >&2
    exit 2
  fi
  source=$(cd "$1" && pwd)
  if head=$(git -C "$source" rev-parse HEAD 2>/dev/null) && [[ "$head" != "$TOKAMAX_COMMIT" ]]; then
    echo "gpu_wheels.sh: $1 is at commit $head, not $TOKAMAX_COMMIT: check that one out" >&2
    exit 2
  fi
fi
cd "$(dirname "$0")/.."
DEST=${DEST:-.whl}
mkdir -p "$DEST"
shopt -s nullglob
old=("$DEST"/*.whl)
if [[ ${#old[@]} -gt 0 ]]; then  # a changed pin would leave two versions, and the loan's
  # install (--no-index --no-deps) stops at two versions of one package
  echo "gpu_wheels.sh: $DEST already holds ${#old[@]} wheels: remove them first" \
       "(rm $DEST/*.whl) so that it holds one version of each" >&2
  exit 2
fi
# glmjax's own needs that the image lacks, then tokamax's (and xprof's two that its import
# reaches); typeguard is the version tokamax pins.
wheels=(ml_collections==1.1.0 tensorboardX==2.6.5
        einshape==1.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
        typing-inspection==0.4.5 qwix==0.1.8 typeguard==2.13.3 immutabledict==4.3.1
        xprof==2.24.2 fire==0.7.1 termcolor==3.3.0)
platforms=()
for platform in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
                manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$platform")
done
# pip's own words go to a log: without a network its failure is a dozen lines of subprocess
# traces; the console gets one line, and a failure leaves no wheel behind, which the check
# above would make the next run refuse.
log=$(mktemp "${TMPDIR:-/tmp}/gpu_wheels-XXXXXX")
fail() {
  rm -f "$DEST"/*.whl
  # git's own cause ("fatal: ... Could not resolve host") before pip's summary of it
  reason=$( { grep -m1 "fatal:" "$log" || grep -m1 "ERROR:" "$log" ||
              grep -m1 "error:" "$log" || true; } | sed -e 's/^[[:space:]]*//')
  echo "gpu_wheels.sh: $1 failed (${reason:-pip says why in the log}); pip's output: $log." \
       "No wheel was kept: run it again once $2" >&2
  exit 1
}
echo "Downloading ${#wheels[@]} wheels for CPython 3.12 on x86-64 Linux into $DEST ..." >&2
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d "$DEST" "${wheels[@]}" >>"$log" 2>&1 \
  || fail "downloading the pinned wheels" "pip reaches PyPI"
source=${source:-"tokamax @ git+https://github.com/openxla/tokamax@$TOKAMAX_COMMIT"}
echo "Building tokamax 0.0.13 from $source ..." >&2
# (pure Python; it asks for 3.12, the GPU machine's, which this machine's pip need not be)
python3 -m pip wheel -q --no-deps --ignore-requires-python -w "$DEST" "$source" >>"$log" 2>&1 \
  || fail "building tokamax from $source" "GitHub is reachable, or give a checkout of tokamax \
at $TOKAMAX_COMMIT: bash launch/gpu_wheels.sh PATH"
rm -f "$log"
built=("$DEST"/*.whl)
echo "${#built[@]} wheels in $DEST, $(du -sh "$DEST" | cut -f1)" >&2
