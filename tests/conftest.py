"""Test setup: 8 simulated CPU devices, set before jax is imported anywhere."""
import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One compilation cache for the session and the trainer subprocesses it starts (they inherit
# the environment): the end-to-end tests compile the same few programs many times over. Kept
# between sessions in one folder (entries are keyed by the program, so a stale one is unused).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "glmjax-test-xla-cache"))

import jax  # noqa: E402

# Tests check semantics on tiny shapes; XLA's optimisation passes cost more than they save here.
jax.config.update("jax_disable_most_optimizations", True)
