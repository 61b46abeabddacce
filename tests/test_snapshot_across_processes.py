"""A device snapshot's copy to pinned host memory with two real processes: each process sends
the parts its own devices hold, and never looks up another process's devices (one CPU process
with 8 devices addresses them all, so only two processes show this)."""
import textwrap

import two_hosts

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
  outcomes = two_hosts.run(CHILD, tmp_path, coordinator_port, devices_per_process=2)
  for status, stderr, text in outcomes:
    assert status == 0 and "Could not send" not in stderr, stderr
    assert text == ("data: 1 shards in ['pinned_host'] right=True; "
                    "data+fsdp: 2 shards in ['pinned_host'] right=True")
