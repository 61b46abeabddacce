"""Test setup: 8 simulated CPU devices, set before jax is imported anywhere."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Tests check semantics on tiny shapes; XLA's optimisation passes cost more than they save here.
jax.config.update("jax_disable_most_optimizations", True)
