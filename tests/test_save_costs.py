"""What a checkpoint save costs the training loop: a deferred save (checkpoint.device_snapshot)
queues its copy without waiting, and lets the copy on the devices go before Orbax writes; the
copy and the checksums of every array run as one compiled program, not op by op."""
import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np

import checkpoint_states as states
from glmjax import checkpoint, checksums, host_copy


def test_a_deferred_save_returns_without_waiting_for_the_devices(tmp_path, monkeypatch):
  """The copy and its checksums queue behind the running step: a wait for them (or a read of
  the checksums) in the save would stall the loop for that step and the copy."""
  state = states.state()
  metadata = states.metadata(state)
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  waits = []
  with monkeypatch.context() as patch:
    patch.setattr(jax, "block_until_ready", lambda tree: waits.append("block") or tree)
    patch.setattr(jax, "device_get", lambda tree: waits.append("device_get") or tree)
    assert ckpt.save(1, state, metadata, defer=True)
  assert waits == []
  assert ckpt.write_deferred(wait=True)  # still written, once waited for
  ckpt.close()
  assert ckpt.steps() == [1]


def test_a_device_snapshot_s_copy_on_the_devices_is_freed_before_orbax_writes(
    tmp_path, monkeypatch):
  """The copy costs a second state's device memory: once its host copy has arrived, nothing
  may hold it while Orbax saves (which allocates, and takes a while)."""
  copies, held = [], []
  copy_with_summary = checksums.copy_with_summary

  def remember_copy(tree):
    copy, summary = copy_with_summary(tree)
    copies.extend(weakref.ref(leaf) for leaf in jax.tree.leaves(copy))
    return copy, summary

  monkeypatch.setattr(checksums, "copy_with_summary", remember_copy)
  state = states.state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  orbax_save = ckpt.manager.save

  def save(*args, **kwargs):
    gc.collect()  # only references left count, not garbage not yet collected
    held.append(sum(ref() is not None for ref in copies))
    return orbax_save(*args, **kwargs)

  monkeypatch.setattr(ckpt.manager, "save", save)
  assert ckpt.save(1, state, states.metadata(state), defer=True)
  assert ckpt.write_deferred(wait=True)
  ckpt.close()
  assert len(copies) == len(jax.tree.leaves(state))  # the save made the copy ...
  assert held == [0]  # ... and none of it was held when Orbax saved


def _traced_leaves(monkeypatch):
  """The arrays checksums' per-array function sees, as they come: a jitted function runs its
  Python once per shape and then the compiled program; op by op, it runs on every call."""
  traced, leaf_summary = [], checksums._leaf_summary
  monkeypatch.setattr(checksums, "_leaf_summary",
                      lambda leaf, chunk: traced.append(leaf.shape) or leaf_summary(leaf, chunk))
  return traced


# Shapes no other test uses: the first call traces them.
_TREE_SHAPES = ((3, 5, 7), (11,), (2, 13))


def test_a_snapshot_s_copy_and_checksums_run_as_one_compiled_program(monkeypatch):
  """Dispatched op by op, a state of a hundred arrays took ten times as long to copy and
  checksum, on the training thread, at every deferred save."""
  traced = _traced_leaves(monkeypatch)
  tree = {str(i): jnp.full(shape, i, jnp.float32) for i, shape in enumerate(_TREE_SHAPES)}
  copy, summary = checksums.copy_with_summary(tree)
  assert len(traced) == 3  # traced once ...
  again, summary_again = checksums.copy_with_summary(tree)
  assert len(traced) == 3  # ... then run compiled: no Python per array
  assert summary_again() == summary() == checksums.state_summary(tree)
  assert jax.tree.map(lambda a, b: bool((a == b).all()), again, copy) == jax.tree.map(
      lambda a: True, tree)


def test_a_checkpoint_s_checksums_run_as_one_compiled_program(monkeypatch):
  """Every save and every restore checksums the whole state: op by op, that is a few dispatches
  per array, from the training thread."""
  traced = _traced_leaves(monkeypatch)
  tree = {str(i): jnp.full(shape, i, jnp.int32) for i, shape in enumerate(_TREE_SHAPES)}
  first = checksums.state_summary(tree)
  assert len(traced) == 3  # traced once ...
  assert checksums.state_summary(tree) == first
  assert len(traced) == 3  # ... then run compiled: no Python per array


def test_a_single_process_hands_its_host_copy_to_orbax_without_a_collective(monkeypatch):
  """Several processes agree on the copy's layout with one collective, which waits for the step
  queued on the devices; a single process has no one to agree with and must not wait."""
  calls = []
  monkeypatch.setattr(host_copy.multihost_utils, "process_allgather",
                      lambda value: calls.append(value) or value)
  copy = {"w": jnp.arange(4.0)}
  on_host = {"w": jnp.arange(4.0) + 1}
  assert host_copy.landed(copy, on_host) is on_host
  assert host_copy.landed(copy, None) is copy
  assert calls == []


def test_a_host_array_s_checksum_is_the_device_one_computed_a_chunk_at_a_time(monkeypatch):
  """An import saves numpy parameters: hashing them in one XLA:CPU program copied each to a
  device and held a hash per element, twice the parameters' bytes (GLM-10B: 79 GB)."""
  rng = np.random.default_rng(0)
  arrays = {"f32": rng.normal(size=(37, 101)).astype(np.float32),
            "bf16": rng.normal(size=(5000,)).astype(jnp.bfloat16),
            "f16": rng.normal(size=(3, 333)).astype(np.float16),
            "i32": rng.integers(-5, 5, 777).astype(np.int32),
            "u8": rng.integers(0, 255, 999).astype(np.uint8), "b": rng.random(1234) > 0.5}
  arrays["f32"][3, 5], arrays["bf16"][7] = np.nan, np.inf
  on_device = checksums.state_summary({name: jnp.asarray(a) for name, a in arrays.items()})
  monkeypatch.setattr(checksums, "HOST_CHUNK", 100)  # many chunks, the last one short
  monkeypatch.setattr(checksums, "_summaries", None)  # no device program for host arrays
  assert checksums.state_summary(arrays) == on_device
  assert on_device["f32"][1] == on_device["bf16"][1] == 1 and on_device["u8"][1] == 0


def test_a_large_array_on_cpu_devices_is_checksummed_a_chunk_at_a_time_to_the_same_values(
    monkeypatch):
  """XLA:CPU held every element's hash and finiteness beside the array: a CPU restore or export
  of 1.3 B float32 parameters peaked at 15.9 GB, 3 times their size."""
  rng = np.random.default_rng(1)
  arrays = {"f32": rng.normal(size=(37, 101)).astype(np.float32),
            "bf16": rng.normal(size=(5000,)).astype(jnp.bfloat16),
            "i32": rng.integers(-5, 5, 777).astype(np.int32), "b": rng.random(1234) > 0.5,
            "small": np.arange(50, dtype=np.float32)}
  arrays["f32"][30, 5], arrays["bf16"][4321] = np.inf, np.nan
  tree = {name: jnp.asarray(a) for name, a in arrays.items()}
  whole = checksums.state_summary(tree)
  monkeypatch.setattr(checksums, "HOST_CHUNK", 100)  # many chunks, the last one short
  assert checksums._chunks(list(tree.values())) == (100, 100, 100, 100, 0)
  assert checksums.state_summary(tree) == whole
  assert checksums.copy_with_summary(tree)[1]() == whole
  assert whole["f32"][1] == whole["bf16"][1] == 1
  # GLM-10B's MLP kernel stack, compiled only: its temporaries are a chunk's, not the array's.
  stack = jax.ShapeDtypeStruct((48, 4096, 16384), jnp.float32)
  temporaries = [checksums._summaries.lower([stack], (chunk,)).compile().memory_analysis()
                 .temp_size_in_bytes for chunk in (0, 1 << 24)]
  assert temporaries[1] < 2**30 < 12 * 2**30 < temporaries[0], temporaries


def test_with_x64_on_a_chunked_8_byte_array_has_the_checksum_it_has_hashed_whole(monkeypatch):
  """An int64 or float64 element is two 32-bit words: a chunk's first word is the array's
  2 * start-th, or a CPU restore of a state saved on an accelerator would call it damaged."""
  with jax.enable_x64(True):
    tree = {"counts": jnp.arange(777, dtype=jnp.int64) * (2**33 + 7),
            "f64": jnp.linspace(-3, 3, 1234, dtype=jnp.float64).at[1000].set(jnp.nan)}
    whole = checksums.state_summary(tree)
    monkeypatch.setattr(checksums, "HOST_CHUNK", 100)  # many chunks, the last one short
    assert checksums._chunks(list(tree.values())) == (100, 100)
    assert checksums.state_summary(tree) == whole
  assert whole["f64"][1] == 1 and whole["counts"][1] == 0


def test_each_array_is_hashed_with_its_own_chunk_beside_host_arrays_and_in_a_snapshot(
    monkeypatch):
  """The chunk bounds a large CPU array's temporaries: given to another array, the large one is
  hashed whole again; host (numpy) arrays are hashed apart and take no chunk."""
  seen = []
  leaf_summary = checksums._leaf_summary
  monkeypatch.setattr(checksums, "_leaf_summary", lambda leaf, chunk: seen.append(
      (leaf.shape, chunk)) or leaf_summary(leaf, chunk))
  monkeypatch.setattr(checksums, "HOST_CHUNK", 100)
  # Shapes no other test uses: each call traces them.
  tree = {"a_host": np.arange(4321, dtype=np.float32), "b_large": jnp.ones((3, 1001)),
          "c_small": jnp.ones((17,))}
  summary = checksums.state_summary(tree)
  assert seen == [((3, 1001), 100), ((17,), 0)]
  assert summary["a_host"] == checksums._host_leaf_summary(tree["a_host"])
  seen.clear()
  device_tree = {"b_large": jnp.ones((7, 1003)), "c_small": jnp.ones((19,))}
  checksums.copy_with_summary(device_tree)
  assert seen == [((7, 1003), 100), ((19,), 0)]
