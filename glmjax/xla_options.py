"""The XLA compiler options glmjax sets on the programs it compiles, per target platform.

Each entry says why it is there; docs/performance.md has the measurements. An option that the
user's XLA_FLAGS names inline is left out, so a flag can always undo a default here (the GPU
script's `flags` part runs the old setting that way); a flag file named by XLA_FLAGS is not
read. Where the installed XLA does not know an option (another jaxlib), the program is compiled
without them, with a warning, rather than not at all.
"""
from __future__ import annotations

import logging

from glmjax import error_text

log = logging.getLogger(__name__)

# platform -> {XLA DebugOptions field: value}
_BY_PLATFORM = {
    "gpu": {
        # The dynamic-slice fusion rewrites a library call whose result is written into a slice
        # of a bigger array (the scan's per-layer stack of saved residuals) into one that writes
        # the slice in place. When that result has another user too, as the tokamax forward's
        # output has (the output projection), XLA kept the original call and added a second:
        # every layer ran its attention forward twice (H200 trace and optimized HLO,
        # 2026-12-04; the step without the fusion is not timed yet). Without the rewrite the
        # result is copied into the stack instead, a few MB per layer.
        "xla_gpu_enable_dynamic_slice_fusion": False,
    },
}


def for_platform(platform: str, xla_flags: str) -> dict[str, bool | int | str]:
  """The options for programs compiled for `platform` ('gpu', 'tpu', 'cpu'), less those that
  `xla_flags` (the XLA_FLAGS text, e.g. '--xla_gpu_enable_dynamic_slice_fusion=true') names."""
  named = {token.lstrip("-").split("=", 1)[0] for token in xla_flags.split()}
  return {name: value for name, value in _BY_PLATFORM.get(platform, {}).items()
          if name not in named}


def compiled(lowered, options: dict):
  """`lowered` (a jax.stages.Lowered) compiled with `options`. Where this XLA knows no option
  of that name, compiled without them, with a warning: a jaxlib that renamed an option must not
  stop a run. A known option with a wrong value still raises."""
  if not options:
    return lowered.compile()
  try:
    return lowered.compile(compiler_options=options)
  except Exception as error:  # noqa: BLE001 - jax's runtime error class moved between versions
    if "No such compile option" not in str(error):
      raise
    log.warning("This XLA refuses glmjax's compiler options %s (%s); compiling without them.",
                options, error_text.first_line(error, 200))
    return lowered.compile()
