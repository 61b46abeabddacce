"""The XLA compiler options glmjax sets on the programs it compiles, per target platform.

Each entry says why it is there; docs/performance.md has the measurements. An option that the
user's XLA_FLAGS names is left out, so a flag can always undo a default here (the GPU script's
`flags` part runs the old setting that way).
"""
from __future__ import annotations

# platform -> {XLA DebugOptions field: value}
_BY_PLATFORM = {
    "gpu": {
        # The dynamic-slice fusion rewrites a library call whose result is written into a slice
        # of a bigger array (the scan's per-layer stack of saved residuals) into one that writes
        # the slice in place. When that result has another user too, as the tokamax forward's
        # output has (the output projection), XLA kept the original call and added a second:
        # every layer ran its attention forward twice (H200 profile, 2026-12-04). Without the
        # rewrite the result is copied into the stack instead, a few MB per layer.
        "xla_gpu_enable_dynamic_slice_fusion": False,
    },
}


def for_platform(platform: str, xla_flags: str) -> dict[str, bool | int | str]:
  """The options for programs compiled for `platform` ('gpu', 'tpu', 'cpu'), less those that
  `xla_flags` (the XLA_FLAGS text, e.g. '--xla_gpu_enable_dynamic_slice_fusion=true') names."""
  named = {token.lstrip("-").split("=", 1)[0] for token in xla_flags.split()}
  return {name: value for name, value in _BY_PLATFORM.get(platform, {}).items()
          if name not in named}
