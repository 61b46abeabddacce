"""Batches are built ahead on a background thread, in order, at most `depth` ahead."""
import threading
import time

import pytest

from glmjax.prefetch import Prefetcher


def test_batches_come_in_step_order_from_the_start_step():
  with Prefetcher(lambda step: {"step": step}, start=5, stop=12) as batches:
    assert [batches.get(step)["step"] for step in range(5, 12)] == list(range(5, 12))


def test_at_most_depth_batches_are_built_ahead_of_the_step():
  built, lock = [], threading.Lock()

  def build(step):
    with lock:
      built.append(step)
    return step

  with Prefetcher(build, start=0, stop=100, depth=2) as batches:
    time.sleep(0.5)  # a slow consumer: the producer must wait, not run ahead
    # Two in the queue and one built and waiting to be put: never more.
    assert len(built) <= 3
    batches.get(0)
    time.sleep(0.3)
    assert len(built) <= 4


def test_by_default_batches_are_built_two_ahead_on_a_thread_other_than_the_caller_s():
  """What train gets (no depth given): while step k waits to be asked for, k + 1 and k + 2 are
  built too, never k + 3, and none of it on the training thread."""
  built, threads, lock = [], set(), threading.Lock()

  def build(step):
    with lock:
      built.append(step)
      threads.add(threading.get_ident())
    return step

  def settled(count):  # the producer reaches `count` batches, then blocks on the full queue
    deadline = time.monotonic() + 60  # at once on an idle machine; long for a starved one
    while len(built) < count and time.monotonic() < deadline:
      time.sleep(0.01)
    time.sleep(0.3)  # time enough to build one more, were it allowed
    return list(built)

  with Prefetcher(build, start=0, stop=100) as batches:
    assert settled(3) == [0, 1, 2]
    assert batches.get(0) == 0
    assert settled(4) == [0, 1, 2, 3]
  assert threading.get_ident() not in threads and len(threads) == 1


def test_an_error_building_a_batch_is_raised_when_that_step_asks_for_it():
  def build(step):
    if step == 3:
      raise FileNotFoundError("shard 7 is gone")
    return step

  with Prefetcher(build, start=0, stop=10) as batches:
    assert [batches.get(step) for step in range(3)] == [0, 1, 2]
    with pytest.raises(FileNotFoundError, match="shard 7 is gone"):
      batches.get(3)


def test_close_stops_the_thread_even_when_the_queue_is_full():
  batches = Prefetcher(lambda step: step, start=0, stop=10**9, depth=1)
  time.sleep(0.2)
  batches.close()
  assert not batches._thread.is_alive()  # pylint: disable=protected-access


def test_steps_out_of_order_are_refused():
  with Prefetcher(lambda step: step, start=0, stop=10) as batches:
    with pytest.raises(ValueError, match="expected step 0, asked for 1"):
      batches.get(1)


def test_prefetching_changes_no_batch_the_losses_equal_those_of_direct_feeding():
  """The train step fed by the prefetcher (real pipeline, sharded transfer on the thread) gives
  bit-identical losses to the same step fed batch by batch on the main thread, dropout on."""
  import importlib

  import jax

  from glmjax import attention_choice, parallel, step as step_lib
  from glmjax.data import pipeline as pipeline_lib, sources, tokenizers

  config = importlib.import_module("configs.base").get_config("local")
  config.model.update(hidden_size=32, num_heads=2, num_layers=1, hidden_dropout=0.1)
  config.data.update(seq_len=64, batch_size=8, builtin_docs=200)
  config.mesh.update(data=2, fsdp=2, tensor=2)
  tokenizer = tokenizers.load_tokenizer(config.data)
  docs, _ = sources.load_documents(config.data, tokenizer)
  pipeline = pipeline_lib.BatchPipeline(config.data, tokenizer, docs, seed=config.seed)
  mesh = parallel.make_mesh(config.mesh)
  rules = parallel.logical_rules(config.mesh)
  host = parallel.host_rows(mesh, config.data.batch_size)
  build = lambda k: parallel.global_batch(pipeline.build_rows(k, host.rows), host)  # noqa: E731

  def losses(batch_at):
    with parallel.activate(mesh, rules):
      program = step_lib.build_program(config, mesh, rules,
                                       attention_choice.resolved_model_config(config))
      compiled = program.compile_train_step(config, mesh)
      state = step_lib.init_sharded_state(program.init_fn, program.shardings, config.seed)
      out = []
      for step in range(3, 7):
        state, metrics = compiled(state, batch_at(step))
        out.append(float(metrics["loss"]))
    return out

  with Prefetcher(build, start=3, stop=7) as batches:
    prefetched = losses(batches.get)
  assert prefetched == losses(build)
  assert len(set(prefetched)) == 4


def test_a_depth_below_one_is_refused():
  # Depth 0 would make an unbounded queue: the producer would build every batch ahead.
  with pytest.raises(ValueError, match="at least 1, got 0"):
    Prefetcher(lambda step: step, start=0, stop=10, depth=0)


def test_no_batch_is_built_past_the_stop_step():
  built = []
  batches = Prefetcher(lambda step: built.append(step) or step, start=4, stop=7)
  assert [batches.get(step) for step in range(4, 7)] == [4, 5, 6]
  # Returns at once when the producer is done; the long limit is for a starved CI machine (a
  # producer that never ends waits on its full queue, and fails the next line).
  batches._thread.join(timeout=60)  # pylint: disable=protected-access
  assert not batches._thread.is_alive()  # pylint: disable=protected-access
  batches.close()
  assert built == [4, 5, 6]


def test_no_batch_is_built_after_one_fails():
  """The step that failed ends the run; later batches (more reads of a broken source) are not
  built behind it."""
  built = []

  def build(step):
    built.append(step)
    if step == 2:
      raise OSError("shard 3 is unreadable")
    return step

  batches = Prefetcher(build, start=0, stop=100, depth=2)
  assert [batches.get(step) for step in range(2)] == [0, 1]
  # The producer ends once the error is handed over (the queue has room for it).
  batches._thread.join(timeout=60)  # pylint: disable=protected-access
  assert not batches._thread.is_alive()  # pylint: disable=protected-access
  with pytest.raises(OSError, match="shard 3"):
    batches.get(2)
  batches.close()
  assert built == [0, 1, 2]


def test_asking_again_after_a_failed_batch_raises_at_once_naming_the_failure():
  """Nothing is built after a failure, so a retry that waited on the queue would never end."""
  def build(step):
    if step == 1:
      raise OSError("shard 3 is unreadable")
    return step

  with Prefetcher(build, start=0, stop=10) as batches:
    assert batches.get(0) == 0
    with pytest.raises(OSError):
      batches.get(1)
    error = _raised_within(60, batches.get, 2)
    assert isinstance(error, RuntimeError)
    assert "batch 2 was not built: building batch 1 failed (OSError: shard 3" in str(error)


def test_asking_past_the_stop_step_is_refused_rather_than_waited_on():
  with Prefetcher(lambda step: step, start=0, stop=2) as batches:
    assert [batches.get(0), batches.get(1)] == [0, 1]
    error = _raised_within(60, batches.get, 2)
    assert isinstance(error, ValueError) and "up to step 1, asked for 2" in str(error)


def _raised_within(seconds, call, *args):
  """The error `call(*args)` raises on a thread; fails the test if it is still waiting (the
  long limit is for a starved CI machine: a correct call raises at once)."""
  outcome = []

  def attempt():
    try:
      call(*args)
      outcome.append(None)
    except Exception as error:  # noqa: BLE001 - the test inspects it
      outcome.append(error)

  thread = threading.Thread(target=attempt, daemon=True)
  thread.start()
  thread.join(timeout=seconds)
  assert outcome, f"the call was still waiting after {seconds} s"
  return outcome[0]
