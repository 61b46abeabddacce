"""The step benchmark's figures, counted by hand: a fake clock moves only when a fake compile
or save says time passes or a fake step's work is waited for, so each division bench makes, and
each wait it must make before a timed window, can be checked."""
import importlib
import json
import logging
import threading
import types

import jax
import numpy as np
import pytest

from glmjax import parallel
from glmjax.bench import step as step_bench
from glmjax.data import pipeline, sources, tokenizers


class _Clock:
  """A perf_counter that moves only when a fake below says time passes: the figures the step
  benchmark derives from its timings can then be counted by hand. Device work is queued, as jax
  dispatches it, and spent on the clock only when a result of it is waited for
  (`block_until_ready`): a clock started before the work ahead of it has finished counts that
  work too, as a real one would."""

  def __init__(self):
    self.now = 100.0
    self.queued = self.spent = 0.0  # seconds of device work queued, and waited for, so far
    self.busy = []  # at each reading, the seconds of queued work not yet waited for

  def perf_counter(self):
    self.busy.append(self.queued - self.spent)
    return self.now

  def advance(self, seconds):
    """Host time: the caller itself is kept busy."""
    self.now += seconds

  def queue(self, seconds):
    """Device work of `seconds`, queued behind the rest: its result (`_Queued`)."""
    self.queued += seconds
    return _Queued(self, self.queued)

  def finish(self, until=None):
    """Wait for the queued work up to `until` (all of it by default)."""
    until = self.queued if until is None else until
    if until > self.spent:
      self.now, self.spent = self.now + until - self.spent, until


class _Queued:
  """The result of queued device work: waiting for it spends that work, and all before it."""

  def __init__(self, clock, until):
    self.clock, self.until = clock, until

  def block_until_ready(self):
    self.clock.finish(self.until)
    return self


class _Step:
  """A compiled train step that runs nothing: each call queues `seconds` of device work on the
  clock and hands back the state it was given, one step on (the real one donates it)."""

  def __init__(self, clock, seconds, first=None):
    self.clock, self.seconds, self.first, self.batches = clock, seconds, first, []

  def __call__(self, state, batch):
    # `first`: the first call's seconds (a warm-up that compiles and allocates), if not `seconds`
    seconds = self.seconds if self.batches or self.first is None else self.first
    self.batches.append(batch)
    return state + 1, {"loss": np.float32(5.5), "model_flops": np.float32(3e9),
                       "logit_positions": np.float32(256), "done": self.clock.queue(seconds)}

  def cost_analysis(self):
    return {"flops": 2e9}  # XLA's count for one device's part of the SPMD program


def _bench_config():
  config = importlib.import_module("configs.base").get_config("local")
  config.data.update(batch_size=16, seq_len=128, builtin_docs=200)
  return config


def _fake_build(monkeypatch, clock, step, *, build_s=0.0, state_s=0.0):
  """step_bench builds no program and no state: building the program takes `build_s` of the
  clock, the state `state_s`, compiling the step 3 s; the pipeline-fed steps take 0.75 s."""
  program = types.SimpleNamespace(
      init_fn=None, shardings=None, compiler_options={"xla_gpu_some_option": False},
      compile_train_step=lambda config, mesh: (clock.advance(3.0), step)[1])
  monkeypatch.setattr(step_bench, "time", clock)
  monkeypatch.setattr(step_bench, "step_lib", types.SimpleNamespace(
      build_program=lambda *args: (clock.advance(build_s), program)[1],
      init_sharded_state=lambda *args: (clock.advance(state_s), 0)[1]))
  monkeypatch.setattr(step_bench, "_fed_by_the_pipeline",
                      lambda config, compiled, state, host, steps: (0.75, state))


def test_the_step_benchmark_divides_its_timings_as_its_figures_say(monkeypatch):
  clock = _Clock()
  step = _Step(clock, 0.5)
  _fake_build(monkeypatch, clock, step)
  devices = jax.device_count()
  # Per device of the whole job, on every host (each of which has only its own devices).
  monkeypatch.setattr(step_bench.jax, "local_device_count", lambda: devices // 2)
  figures = step_bench.measure(_bench_config(), 4)
  assert len(step.batches) == 1 + 4  # a warm-up step, then the 4 timed ones
  assert figures["compile_s"] == pytest.approx(3.0)
  assert figures["step_time_s"] == pytest.approx(0.5)
  assert figures["tokens_per_s"] == pytest.approx(16 * 128 / 0.5)
  assert figures["tflops_per_device"] == pytest.approx(3e9 / 0.5 / devices / 1e12)
  assert figures["formula_flops_per_step"] == pytest.approx(3e9)
  assert figures["compiled_flops_per_step"] == pytest.approx(2e9 * devices)  # every device's
  assert figures["loss"] == pytest.approx(5.5)
  # The ratio to one pre-built step: 0.75 / 0.5.
  assert figures["step_time_s_pipeline"] == pytest.approx(0.75)
  assert figures["pipeline_vs_prebuilt"] == pytest.approx(1.5)
  assert figures["xla_options"] == {"xla_gpu_some_option": False}  # the program's, reported


def test_the_step_benchmark_s_mfu_is_over_the_peak_of_the_device_kind_it_ran_on(monkeypatch):
  clock = _Clock()
  _fake_build(monkeypatch, clock, _Step(clock, 0.5))

  class OnAV4:  # jax as the step benchmark sees it, its devices named as a TPU v4's are
    def __getattr__(self, name):
      return getattr(jax, name)

    def devices(self):
      return [types.SimpleNamespace(device_kind="TPU v4", platform="tpu")] * jax.device_count()

  monkeypatch.setattr(step_bench, "jax", OnAV4())
  figures = step_bench.measure(_bench_config(), 2)
  assert figures["device_kind"] == "TPU v4"
  assert figures["mfu"] == pytest.approx(
      figures["tflops_per_device"] * 1e12 / step_bench.metrics.peak_flops("TPU v4"))


def test_the_step_benchmark_says_it_is_compiling_and_how_long_that_took(monkeypatch, caplog):
  """Minutes pass before the JSON line for a big config (save and profile share this set-up)."""
  clock = _Clock()
  _fake_build(monkeypatch, clock, _Step(clock, 0.5))
  with caplog.at_level(logging.INFO, logger="glmjax.bench.step"):
    step_bench.measure(_bench_config(), 2)
  lines = [r.getMessage() for r in caplog.records if r.name == "glmjax.bench.step"]
  assert lines[0].startswith("Building and compiling the train step (16 rows of 128 tokens, "
                             "attention=")
  assert lines[1] == "Compiled in 3.0 s; timing it (one JSON line follows on stdout)"


def test_the_step_benchmark_starts_its_clock_after_the_warm_up_step_has_finished(monkeypatch):
  clock = _Clock()
  step = _Step(clock, 0.5, first=4.0)  # the warm-up's 4 s of device work would show if timed
  _fake_build(monkeypatch, clock, step)
  figures = step_bench.measure(_bench_config(), 4)
  assert figures["step_time_s"] == pytest.approx(0.5)
  assert clock.busy and not any(clock.busy)  # no reading while device work was still queued


def test_the_step_benchmark_waits_once_for_its_timed_steps(monkeypatch):
  """A wait after each timed step would leave the devices idle while the host dispatches the
  next, and add that gap to the step time."""
  clock, events = _Clock(), []
  _fake_build(monkeypatch, clock, _Step(clock, 0.5))
  read, wait = clock.perf_counter, jax.block_until_ready
  monkeypatch.setattr(clock, "perf_counter", lambda: events.append("read") or read())
  monkeypatch.setattr(jax, "block_until_ready", lambda tree: events.append("wait") or wait(tree))
  step_bench.measure(_bench_config(), 5)
  # The compile's two readings, the warm-up's wait, then the timed window of 5 steps: one wait,
  # for the last, before its closing reading.
  assert events == ["read", "read", "wait", "read", "wait", "read"]


def test_the_step_benchmark_feeds_its_steps_a_batch_already_on_the_devices(monkeypatch):
  """A host batch would be transferred again at every timed step, and timed with it."""
  clock = _Clock()
  step = _Step(clock, 0.5)
  _fake_build(monkeypatch, clock, step)
  config = _bench_config()
  step_bench.measure(config, 2)
  synthetic = step_bench.synthetic_batch(config.data.batch_size, config.data.seq_len,
                                         config.model.vocab_size)
  for batch in step.batches:
    assert all(isinstance(leaf, jax.Array) for leaf in batch.values())
    np.testing.assert_array_equal(np.asarray(batch["tokens"]), synthetic["tokens"])


def test_the_step_benchmark_s_compile_time_is_the_compile_s_alone(monkeypatch):
  clock = _Clock()
  _fake_build(monkeypatch, clock, _Step(clock, 0.5), build_s=7.0, state_s=11.0)
  # Building the program (7 s) and the state (11 s) come before the compile's 3 s.
  assert step_bench.measure(_bench_config(), 2)["compile_s"] == pytest.approx(3.0)


def test_the_pipeline_fed_step_time_is_that_of_the_steps_after_the_first_batch(monkeypatch):
  clock = _Clock()
  step = _Step(clock, 0.5)
  monkeypatch.setattr(step_bench, "time", clock)
  config = _bench_config()
  mesh = parallel.make_mesh(config.mesh)
  host = parallel.host_rows(mesh, config.data.batch_size)
  with parallel.activate(mesh, parallel.logical_rules(config.mesh)):
    seconds, state = step_bench._fed_by_the_pipeline(config, step, 0, host, 3)
  # The first batch is built while nothing runs: it is fed, not timed; each of the 3 timed
  # steps then takes its 0.5 s.
  assert seconds == pytest.approx(0.5) and state == 4
  # Its step is waited for before the clock starts: no reading with device work still queued.
  assert clock.busy and not any(clock.busy)
  # The batches train would feed at steps 0..3, in order.
  tokenizer = tokenizers.load_tokenizer(config.data)
  docs, _ = sources.load_documents(config.data, tokenizer)
  built = pipeline.BatchPipeline(config.data, tokenizer, docs, seed=config.seed)
  assert len(step.batches) == 4
  for index, batch in enumerate(step.batches):
    np.testing.assert_array_equal(np.asarray(batch["tokens"]),
                                  built.global_batch(index)["tokens"])


def test_the_pipeline_fed_step_benchmark_builds_every_batch_on_the_prefetch_thread(monkeypatch):
  """As train does: a batch built on the timing thread would be timed with the step."""
  clock, threads = _Clock(), []
  monkeypatch.setattr(step_bench, "time", clock)
  pipeline_batch = parallel.pipeline_batch
  monkeypatch.setattr(parallel, "pipeline_batch", lambda *args, **kwargs: (
      threads.append(threading.current_thread().name), pipeline_batch(*args, **kwargs))[1])
  config = _bench_config()
  mesh = parallel.make_mesh(config.mesh)
  host = parallel.host_rows(mesh, config.data.batch_size)
  with parallel.activate(mesh, parallel.logical_rules(config.mesh)):
    step_bench._fed_by_the_pipeline(config, _Step(clock, 0.5), 0, host, 3)
  assert threads == ["batch-prefetch"] * 4  # the first batch and the 3 timed steps'


def test_the_step_benchmark_s_synthetic_rows_are_glm_rows_with_one_part_b_span():
  seq_len, vocab = 64, 100
  batch = step_bench.synthetic_batch(6, seq_len, vocab, seed=3)
  for row in range(6):
    sep = int(batch["sep"][row])
    assert int(0.7 * seq_len) <= sep < int(0.95 * seq_len)  # Part A: 70-95% of the row
    a, b = slice(0, sep), slice(sep, seq_len)
    tokens = batch["tokens"][row]
    assert 0 <= tokens.min() and tokens.max() < vocab
    np.testing.assert_array_equal(batch["targets"][row][:-1], tokens[1:])  # the next token
    np.testing.assert_array_equal(batch["loss_mask"][row], np.arange(seq_len) >= sep)
    # Part A: positions 0..sep-1, block position 0.
    np.testing.assert_array_equal(batch["position_ids"][row][a], np.arange(sep))
    assert not batch["block_position_ids"][row][a].any()
    # Part B: one span, at the position of a token of Part A (its [MASK]), with block
    # positions 1, 2, ... through the span.
    part_b = batch["position_ids"][row][b]
    assert len(set(part_b)) == 1 and 0 <= part_b[0] < sep
    np.testing.assert_array_equal(batch["block_position_ids"][row][b],
                                  np.arange(1, seq_len - sep + 1))


def test_the_peak_memory_figure_is_the_device_s_peak_not_what_it_holds_now(monkeypatch):
  device = types.SimpleNamespace(memory_stats=lambda: {"bytes_in_use": 1 << 20,
                                                       "peak_bytes_in_use": 3 << 30})
  monkeypatch.setattr(jax, "local_devices", lambda: [device])
  assert step_bench.peak_device_memory() == 3 << 30
  device.memory_stats = lambda: None  # a backend that reports nothing
  assert step_bench.peak_device_memory() is None


@pytest.mark.parametrize("given, steps", [(7, 7), (0, step_bench.DEFAULT_STEPS)])
def test_the_step_benchmark_times_the_steps_asked_for(monkeypatch, capsys, given, steps):
  asked = []
  monkeypatch.setattr(step_bench, "flags", types.SimpleNamespace(
      FLAGS=types.SimpleNamespace(steps=given)))
  monkeypatch.setattr(step_bench, "measure", lambda config, n: asked.append(n) or {"steps": n})
  step_bench.main(_bench_config(), [])
  assert asked == [steps] and json.loads(capsys.readouterr().out) == {"steps": steps}
