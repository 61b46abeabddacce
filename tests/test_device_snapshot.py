"""checkpoint.device_snapshot: a save's copy of the state on the devices, sent on to pinned host
memory (at once or in checkpoint.snapshot_parts parts) and handed to Orbax once there; with
several processes at the same call on each; saved from the devices where it cannot reach host
memory."""
import logging
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

import checkpoint_states as states
from glmjax import checkpoint, checksums, host_copy, step


@pytest.fixture()
def mesh():
  return states.fsdp_mesh()


def test_a_deferred_save_writes_its_step_s_state_after_that_state_was_donated(tmp_path, mesh):
  """checkpoint.device_snapshot: the save copies the state on its devices; the loop then donates
  the state to the next step, and the copy is what gets written."""
  # `expected` from a second state: on CPU a host view of `state` would keep it from donation.
  state, expected = states.state(), jax.device_get(states.state())
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  assert ckpt.save(5, state, states.metadata(state), defer=True)
  assert ckpt.steps() == []  # nothing written before the next step is dispatched
  next_step = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=0)
  after = next_step(state)
  assert state.params["dense"]["kernel"].is_deleted()
  assert ckpt.write_deferred(wait=True) and not ckpt.write_deferred()  # written once
  ckpt.wait()
  restored = ckpt.restore_latest(states.abstract(after, mesh), states.metadata(after)["param_layout"])
  assert restored.step == 5
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.state), expected)
  # A NaN found in the copy is refused when it is written, as an undeferred save refuses it.
  ckpt.save(6, states.state(float("nan")), states.metadata(after), defer=True)
  with pytest.raises(checkpoint.NonFiniteStateError, match="Not saving step 6"):
    ckpt.write_deferred(wait=True)
  ckpt.close()
  assert ckpt.steps() == [5]


def test_a_device_snapshot_goes_to_pinned_host_memory_at_once_with_the_original_values(mesh):
  """The copy's transfer to the host starts when the save is made, not when Orbax gets it."""
  state = jax.device_put(states.state(), jax.tree.map(lambda x: x.sharding,
                                                      states.abstract(states.state(), mesh)))
  copy = host_copy.start(checksums.copy_with_summary(state)[0])
  kinds = {leaf.sharding.memory_kind for leaf in jax.tree.leaves(copy)}
  assert kinds == {"pinned_host"}
  # Split over fsdp as the state is; a replicated array sent once, not once per device.
  assert [len(leaf.addressable_shards) for leaf in jax.tree.leaves(copy)] == [
      4 if leaf.ndim == 2 else 1 for leaf in jax.tree.leaves(state)]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(copy), jax.device_get(state))
  assert host_copy.nbytes(copy) == sum(leaf.nbytes for leaf in jax.tree.leaves(state))
  assert host_copy.nbytes(state) > host_copy.nbytes(copy)  # the replicas on the devices


def test_a_device_snapshot_is_written_only_once_it_is_on_the_host_unless_the_caller_waits(
    tmp_path, monkeypatch):
  """Each step's write_deferred() looks without waiting; the copy goes to Orbax only once every
  array has arrived, so a transfer longer than a step never stalls the loop. A new save, or
  close, waits for it."""
  on_host, looked_at = {"now": False}, []

  def arrived(tree):
    looked_at.append({leaf.sharding.memory_kind for leaf in jax.tree.leaves(tree)})
    return on_host["now"]

  monkeypatch.setattr(host_copy, "arrived", arrived)
  state = states.state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=3)
  assert ckpt.save(1, state, states.metadata(state), defer=True)
  assert not ckpt.write_deferred() and not ckpt.write_deferred() and ckpt.snapshot_pending
  assert looked_at[0] == {"pinned_host"}  # sent on by the save itself, not by Orbax
  on_host["now"] = True
  assert ckpt.write_deferred() and not ckpt.snapshot_pending
  on_host["now"] = False
  ckpt.save(2, state, states.metadata(state), defer=True)
  ckpt.save(3, state, states.metadata(state), defer=True)  # waits for step 2's copy
  ckpt.close()  # waits for step 3's
  assert ckpt.steps() == [1, 2, 3]


@pytest.mark.parametrize("sizes, parts, runs", [
    ([4] * 8, 4, [[0, 1], [2, 3], [4, 5], [6, 7]]),
    ([1, 2, 3, 4, 5, 6], 3, [[0, 1, 2], [3, 4], [5]]),  # the largest part 9 bytes, not 10 or 11
    ([100, 1, 1, 1], 3, [[0], [1, 2, 3]]),  # the big array alone; fewer parts than asked
    ([1, 1, 1, 100], 3, [[0, 1, 2], [3]]),
    ([3, 3, 3], 1, [[0, 1, 2]]),
    ([4] * 3, 8, [[0], [1], [2]]),  # never an empty part, never an array cut
    ([], 2, []),
])
def test_a_snapshot_s_parts_keep_the_arrays_order_and_make_the_largest_part_as_small_as_it_can(
    sizes, parts, runs):
  assert host_copy.split_by_bytes(sizes, parts) == runs


def test_a_snapshot_in_parts_reaches_pinned_host_memory_a_part_per_send(mesh):
  state = jax.device_put(states.state(), jax.tree.map(lambda x: x.sharding,
                                                      states.abstract(states.state(), mesh)))
  copy = checksums.copy_with_summary(state)[0]
  transfer = host_copy.Transfer(copy, parts=2)
  leaves = lambda: jax.tree.leaves(transfer.on_host())  # noqa: E731
  assert {leaf.sharding.memory_kind for leaf in leaves()} == {"device"}
  assert not transfer.arrived() and not transfer.all_sent
  transfer.send()
  sent = [leaf.sharding.memory_kind == "pinned_host" for leaf in leaves()]
  assert any(sent) and not all(sent) and not transfer.all_sent
  assert sent == sorted(sent, reverse=True)  # the first arrays go first
  transfer.send()
  assert transfer.all_sent and {leaf.sharding.memory_kind for leaf in leaves()} == {"pinned_host"}
  jax.block_until_ready(transfer.on_host())
  assert transfer.arrived() and not transfer.failed
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(transfer.on_host()),
               jax.device_get(state))


def test_a_snapshot_s_parts_are_cut_by_the_arrays_global_bytes_the_same_on_every_process():
  """A replicated array is 8 times its bytes on this host's 8 devices; cut by those, the parts
  could differ between processes, which must hand their copies to Orbax at the same call."""
  mesh = Mesh(np.array(jax.devices()[:8]), ("fsdp",))
  replicated = jax.sharding.NamedSharding(mesh, PartitionSpec())
  split = jax.sharding.NamedSharding(mesh, PartitionSpec("fsdp"))
  copy = {"a": jax.device_put(np.ones(128, np.float32), replicated),
          "b": jax.device_put(np.ones(128, np.float32), split),
          "c": jax.device_put(np.ones(128, np.float32), split)}
  transfer = host_copy.Transfer(copy, parts=2)  # global bytes 512 each: a and b, then c
  transfer.send()
  sent = transfer.on_host()
  assert [sent[name].sharding.memory_kind for name in "abc"] == [
      "pinned_host", "pinned_host", "device"]
  # Cut by bytes, not by the count of arrays (which would give a and b, then c and d): a first
  # array as big as the three others together goes alone.
  copy["a"] = jax.device_put(np.ones(384, np.float32), split)
  copy["d"] = jax.device_put(np.ones(128, np.float32), split)
  transfer = host_copy.Transfer(copy, parts=2)  # 1536, 512, 512, 512 bytes: a, then b, c, d
  transfer.send()
  sent = transfer.on_host()
  assert [sent[name].sharding.memory_kind for name in "abcd"] == [
      "pinned_host", "device", "device", "device"]


def test_a_snapshot_in_parts_is_written_after_its_last_part_and_restores_whole(tmp_path, mesh):
  """Each write_deferred() after the save sends a part, so that the save's step carries only
  the device copy and each step after it one part; the copy goes to Orbax at the call after
  the last part."""
  state = states.state(4.0)
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2, snapshot_parts=3)
  assert ckpt.save(1, state, states.metadata(state), defer=True)
  transfer = ckpt._deferred[1]
  assert not any(leaf.sharding.memory_kind == "pinned_host"
                 for leaf in jax.tree.leaves(transfer.on_host()))
  for _ in range(3):
    assert not ckpt.write_deferred() and ckpt.snapshot_pending  # parts one, two and three
  jax.block_until_ready(jax.tree.leaves(transfer.on_host()))
  assert ckpt.write_deferred() and not ckpt.snapshot_pending
  ckpt.close()
  restored = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2).restore_latest(
      states.abstract(states.state(), mesh), states.metadata(state)["param_layout"])
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.state),
               jax.device_get(state))


@pytest.mark.parametrize("parts", [2, 3])
def test_a_snapshot_whose_parts_are_still_unsent_is_written_by_close_and_by_the_next_save(
    tmp_path, parts):
  """The loop stopped, or the next save came, before every part was sent: all the rest is sent
  and the snapshot written, never dropped."""
  state = states.state(4.0)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "closed"), every=1, keep=3, snapshot_parts=parts)
  assert ckpt.save(1, state, states.metadata(state), defer=True)
  ckpt.close()
  assert checkpoint.Checkpointer(str(tmp_path / "closed"), every=1, keep=3).steps() == [1]
  ckpt = checkpoint.Checkpointer(str(tmp_path / "saved"), every=1, keep=3, snapshot_parts=parts)
  assert ckpt.save(1, state, states.metadata(state), defer=True)
  assert ckpt.save(2, state, states.metadata(state), force=True)
  ckpt.close()
  assert checkpoint.Checkpointer(str(tmp_path / "saved"), every=1, keep=3).steps() == [1, 2]


@pytest.mark.parametrize("processes", [1, 2])
def test_a_snapshot_whose_second_part_fails_goes_whole_from_the_devices_at_the_usual_call(
    tmp_path, monkeypatch, processes):
  """A failed part still takes its turn: every process hands its copy over at the call after
  the last part, whatever failed where (a process that jumped ahead would meet the others'
  collectives out of order); the device copy is then saved whole."""
  state = states.state(5.0)
  calls, start = [], host_copy.start
  monkeypatch.setattr(host_copy, "start", lambda tree: calls.append(len(tree)) or (
      None if len(calls) == 2 else start(tree)))
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2, snapshot_parts=3)
  ckpt.save(1, state, states.metadata(state), defer=True)
  handed, write = [], ckpt.manager.save
  monkeypatch.setattr(ckpt.manager, "save", lambda step, args, **kwargs: (
      handed.append({leaf.sharding.memory_kind for leaf in jax.tree.leaves(args["state"].item)}),
      write(step, args=args, **kwargs) if processes == 1 else True)[1])  # Orbax's faked for 2
  if processes > 1:
    monkeypatch.setattr(checkpoint.jax, "process_count", lambda: processes)
    monkeypatch.setattr(host_copy.multihost_utils, "process_allgather",
                        lambda mine: np.array([mine] * processes))
  for _ in range(3):
    assert not ckpt.write_deferred() and not handed
  assert len(calls) == 2  # the third part was not sent after the second failed
  assert ckpt.write_deferred() and handed == [{"device"}]
  monkeypatch.undo()
  ckpt.close()
  if processes > 1:
    return
  restored = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2).restore_latest(
      states.abstract(states.state(), states.fsdp_mesh()), states.metadata(state)["param_layout"])
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.state),
               jax.device_get(state))


class _Landing:
  """An array whose transfer has or has not finished."""

  def __init__(self, ready):
    self.dtype, self.ready = np.dtype(np.float32), ready

  def is_ready(self):
    return self.ready


def test_a_device_snapshot_counts_as_on_the_host_only_when_every_array_is():
  assert host_copy.arrived({"a": _Landing(True), "b": _Landing(True)})
  assert not host_copy.arrived({"a": _Landing(True), "b": _Landing(False)})
  assert not host_copy.arrived({"a": _Landing(False), "b": _Landing(True)})
  # A transfer that failed cannot say it is ready: it counts as arrived, so the save goes on
  # (from the devices, as `landed` decides) instead of holding the copy until the next save.
  failed = _Landing(True)
  failed.is_ready = lambda: (_ for _ in ()).throw(RuntimeError("transfer failed"))
  assert host_copy.arrived({"a": _Landing(False), "b": failed}) is False  # a part still going
  assert host_copy.arrived({"a": _Landing(True), "b": failed})


def test_a_device_snapshot_of_a_data_parallel_state_restores_into_the_state_s_shardings(
    tmp_path):
  """One replica of each shard is written (from a sub-mesh of the devices); a restore reads it
  back into the run's own shardings, replicas and all."""
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "fsdp"))
  target = states.abstract(states.state(), mesh)
  state = jax.device_put(states.state(2.0), jax.tree.map(lambda x: x.sharding, target))
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  ckpt.save(1, state, states.metadata(state), defer=True)
  ckpt.close()
  restored = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2).restore_latest(
      target, states.metadata(state)["param_layout"])
  assert restored.step == 1
  for got, want in zip(jax.tree.leaves(restored.state), jax.tree.leaves(state)):
    assert got.sharding == want.sharding and len(got.addressable_shards) == 8
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def _fake_mesh(processes_by_row):
  """A mesh (data, fsdp) of fake devices: row i's devices belong to processes_by_row[i]."""
  devices = np.empty((len(processes_by_row), len(processes_by_row[0])), object)
  for index, process in np.ndenumerate(np.array(processes_by_row)):
    devices[index] = types.SimpleNamespace(process_index=int(process), id=index)
  return types.SimpleNamespace(devices=devices, axis_names=("data", "fsdp"))


def test_the_devices_that_send_a_snapshot_hold_one_replica_and_leave_no_process_without_one():
  """Index 0 of the axes an array is replicated over sends it; with several processes, only
  when every process keeps a part (Orbax fails on a process with none, and refuses an array one
  process holds alone): otherwise the array stays on the devices for Orbax to transfer."""
  split = lambda spec, mesh: types.SimpleNamespace(spec=spec, mesh=mesh)
  one_host = _fake_mesh([[0, 0, 0, 0], [0, 0, 0, 0]])
  senders = host_copy.sending_devices(split(PartitionSpec("fsdp"), one_host), 1)
  assert senders.shape == (1, 4)  # data=2 replicas: the first row sends
  assert host_copy.sending_devices(split(PartitionSpec(), one_host), 1).shape == (1, 1)
  both = host_copy.sending_devices(split(PartitionSpec(("data", "fsdp")), one_host), 1)
  assert both.shape == (2, 4)  # split over every axis: every device sends its own part
  # Four hosts, one per half-row: data=2 over hosts {0, 1} and {2, 3}.
  four_hosts = _fake_mesh([[0, 0, 1, 1], [2, 2, 3, 3]])
  assert host_copy.sending_devices(split(PartitionSpec("fsdp"), four_hosts), 4) is None
  assert host_copy.sending_devices(split(PartitionSpec("data", "fsdp"), four_hosts),
                                   4).shape == (2, 4)
  # Two hosts, one per row: the fsdp-split array is sent by host 0's row alone.
  two_hosts = _fake_mesh([[0, 0, 0, 0], [1, 1, 1, 1]])
  assert host_copy.sending_devices(split(PartitionSpec("fsdp"), two_hosts), 2) is None
  assert host_copy.sending_devices(split(PartitionSpec("data"), two_hosts), 2).shape == (2, 1)


@pytest.mark.parametrize("parts", [1, 2])
def test_with_several_processes_a_device_snapshot_is_written_after_the_next_step_arrived_or_not(
    tmp_path, monkeypatch, parts):
  """Orbax's barriers are collectives: every process must reach them at the same step, the
  one after its last part was sent (in parts, one is sent after each step)."""
  state = states.state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2, snapshot_parts=parts)
  ckpt.save(1, state, states.metadata(state), defer=True)
  handed = []
  monkeypatch.setattr(ckpt.manager, "save", lambda step, **kwargs: handed.append(step) or True)
  monkeypatch.setattr(host_copy, "arrived", lambda tree: False)
  monkeypatch.setattr(checkpoint.jax, "process_count", lambda: 2)  # Orbax's save is faked
  monkeypatch.setattr(host_copy.multihost_utils, "process_allgather",
                      lambda mine: np.array([mine, mine]))  # the other process agrees
  for _ in range(parts if parts > 1 else 0):
    assert not ckpt.write_deferred() and handed == []  # a part goes
  assert ckpt.write_deferred() and handed == [1]
  monkeypatch.undo()
  ckpt.close()


class _LostInTransfer:
  """A host copy whose transfer failed under way (pinned host memory ran out, say)."""

  def block_until_ready(self):
    raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 24.0G of pinned host memory")


def _refused(leaf):
  raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory in pinned host memory")


@pytest.mark.parametrize("failure", ["at_once", "under_way"])
def test_a_device_snapshot_that_cannot_reach_host_memory_is_saved_from_the_devices(
    tmp_path, monkeypatch, caplog, failure):
  """Pinned host memory can run out: the save then goes as Orbax sends it, from the device
  copy, whole, with a warning."""
  state = states.state(3.0)
  expected = jax.device_get(state)
  if failure == "at_once":
    monkeypatch.setattr(host_copy, "_in_host_memory", _refused)
  else:
    monkeypatch.setattr(host_copy, "_in_host_memory", lambda leaf: _LostInTransfer())
    monkeypatch.setattr(host_copy, "arrived", lambda tree: True)
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  ckpt.save(1, state, states.metadata(state), defer=True)
  handed = []
  write = ckpt.manager.save
  monkeypatch.setattr(ckpt.manager, "save", lambda step, args, **kwargs: (
      handed.append({leaf.sharding.memory_kind for leaf in jax.tree.leaves(args["state"].item)}),
      write(step, args=args, **kwargs))[1])
  assert ckpt.write_deferred()
  monkeypatch.undo()
  ckpt.close()
  assert handed == [{"device"}]  # the device copy went to Orbax
  restored = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2).restore_latest(
      states.abstract(state, states.fsdp_mesh()), states.metadata(state)["param_layout"])
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.state), expected)
  assert any("goes to Orbax from the devices" in record.getMessage()
             for record in caplog.records)


def test_with_several_processes_all_save_from_the_devices_if_one_host_copy_failed(monkeypatch):
  """Every process must hand Orbax arrays of one layout: one failure decides for all."""
  copy, on_host = states.state(1.0), states.state(2.0)  # stand-ins for the two copies
  monkeypatch.setattr(host_copy.jax, "process_count", lambda: 2)
  votes = {}
  monkeypatch.setattr(host_copy.multihost_utils, "process_allgather",
                      lambda mine: np.array([int(mine), votes["other"]]))
  votes["other"] = 1
  assert host_copy.landed(copy, on_host) is on_host
  votes["other"] = 0  # the other host's copy did not arrive
  assert host_copy.landed(copy, on_host) is copy
  assert host_copy.landed(copy, None) is copy  # nor did this one's start


def test_a_preemption_save_is_never_deferred(tmp_path):
  """The run exits right after it: a copy waiting for the next step would never be written."""
  state = states.state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=4, keep=2)
  assert ckpt.save(7, state, states.metadata(state), preempted=True, defer=True)
  assert not ckpt.write_deferred()  # nothing queued: handed to Orbax at once
  ckpt.wait()
  assert ckpt.steps() == [7]
  ckpt.close()


def test_a_preemption_save_drops_a_queued_copy_of_an_earlier_step(tmp_path, caplog):
  """The grace period holds one write: the copy of step 4, still being sent in parts, is not
  written before step 6, which supersedes it."""
  state = states.state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=4, keep=2, snapshot_parts=4)
  assert ckpt.save(4, state, states.metadata(state), defer=True) and ckpt.snapshot_pending
  assert ckpt.save(6, state, states.metadata(state), preempted=True, defer=True)
  ckpt.close()
  assert ckpt.steps() == [6] and "Dropping the queued copy of step 4" in caplog.text


def test_a_deferred_save_left_by_a_loop_that_stopped_is_written_on_close(tmp_path):
  state = states.state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=4, keep=2)
  assert not ckpt.save(3, state, states.metadata(state), defer=True)  # not due
  assert ckpt.save(4, state, states.metadata(state), defer=True)
  ckpt.close()  # the next step raised before write_deferred: the state of step 4 is kept
  assert checkpoint.Checkpointer(str(tmp_path), every=4, keep=2).steps() == [4]


def test_a_run_s_last_step_saved_as_a_device_snapshot_is_written_once_without_an_error(
    tmp_path, mesh, caplog):
  """With checkpoint.device_snapshot a last step on the save grid is first queued as a copy;
  the run's final save of that step then writes the copy, and closing has nothing left."""
  state = states.state(5.0)
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=2, keep=3)
  assert ckpt.save(4, state, states.metadata(state), defer=True)
  ckpt.save(4, state, states.metadata(state), force=True)  # train's save at the end of the loop
  ckpt.close()
  assert not [record.getMessage() for record in caplog.records
              if record.levelno >= logging.ERROR]
  assert ckpt.steps() == [4]
  fresh = checkpoint.Checkpointer(str(tmp_path), every=2, keep=3)
  restored = fresh.restore_latest(states.abstract(state, mesh), states.metadata(state)["param_layout"])
  fresh.close()
  np.testing.assert_array_equal(restored.state.params["dense"]["kernel"],
                                state.params["dense"]["kernel"])


def test_a_prng_key_array_stays_on_the_devices_where_others_go_to_pinned_host_memory(
    monkeypatch):
  # A key array cannot go to pinned host memory as it is (it has no raw bytes of its own; see
  # host_copy.key_free): the dropout key is left on the devices for Orbax to fetch.
  sent = []
  monkeypatch.setattr(host_copy, "_device_has_pinned_memory", lambda device: True)
  monkeypatch.setattr(host_copy, "_in_host_memory", lambda leaf: sent.append(leaf) or "sent")
  state = {"w": jnp.ones(4), "key": jax.random.key(0)}
  copy = host_copy.start(state)
  assert copy["w"] == "sent" and copy["key"] is state["key"] and len(sent) == 1


class _Device:
  """A device (hashable, as jax's are) whose runtime lists memories of these kinds, or fails."""

  def __init__(self, *kinds):
    self.kinds = kinds

  def addressable_memories(self):
    if not self.kinds:
      raise RuntimeError("memories are not implemented on this backend")
    return [types.SimpleNamespace(kind=kind) for kind in self.kinds]


def test_only_a_device_that_lists_pinned_host_memory_counts_as_having_some():
  """Elsewhere a transfer there would fail at each save: the copy stays for Orbax to send."""
  assert host_copy._device_has_pinned_memory(_Device("device", "pinned_host", "unpinned_host"))
  assert not host_copy._device_has_pinned_memory(_Device("device", "unpinned_host"))
  assert not host_copy._device_has_pinned_memory(_Device())
