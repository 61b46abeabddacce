"""A device snapshot's copy to pinned host memory with two real processes: each process sends
the parts its own devices hold, and never looks up another process's devices (one CPU process
with 8 devices addresses them all, so only two processes show this)."""
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = textwrap.dedent("""
    import logging
    import sys
    import jax
    jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from glmjax import host_copy

    logging.basicConfig(level=logging.WARNING)
    # data=2 across the processes (one row each), fsdp=2 within each: an array split over data
    # is sent by the first fsdp device of each process.
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "fsdp"))
    full = np.arange(24, dtype=np.float32).reshape(4, 6)
    lines = []
    for name, spec in (("data", PartitionSpec("data")),
                       ("data+fsdp", PartitionSpec("data", "fsdp"))):
      sharding = NamedSharding(mesh, spec)
      leaf = jax.make_array_from_callback(full.shape, sharding, lambda index: full[index])
      sent = host_copy.start({"w": leaf})
      if sent is None:
        lines.append(f"{name}: not sent")
        continue
      shards = sent["w"].addressable_shards
      kinds = {shard.data.sharding.memory_kind for shard in shards}
      right = all(np.array_equal(np.asarray(shard.data), full[shard.index]) for shard in shards)
      lines.append(f"{name}: {len(shards)} shards in {sorted(kinds)} right={right}")
    with open(sys.argv[3], "w") as out:  # not stdout: gloo writes there too
      out.write("; ".join(lines))
""")


def test_each_process_sends_only_the_snapshot_parts_its_own_devices_hold(tmp_path,
                                                                         coordinator_port):
  script = tmp_path / "child.py"
  script.write_text(CHILD)
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
         "JAX_PLATFORMS": "cpu", "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
         "PYTHONPATH": REPO}
  results = [tmp_path / f"host{index}.txt" for index in range(2)]
  children = [subprocess.Popen([sys.executable, str(script), f"localhost:{coordinator_port}",
                                str(index), str(results[index])], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
              for index in range(2)]
  try:
    errors = [child.communicate(timeout=300)[1] for child in children]
  finally:  # a hung child must not outlive the test holding the coordinator's port
    for child in children:
      if child.poll() is None:
        child.kill()
  for child, err in zip(children, errors):
    assert child.returncode == 0, err[-3000:]
    assert "Could not send" not in err, err[-3000:]
  for result in results:
    assert result.read_text() == (
        "data: 1 shards in ['pinned_host'] right=True; "
        "data+fsdp: 2 shards in ['pinned_host'] right=True")
