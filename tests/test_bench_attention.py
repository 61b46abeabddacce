"""`bench --what=attention`: each kernel's milliseconds and TFLOP/s under the GLM mask, the
kernels that fail their check skipped, and tokamax autotuned when asked."""
import importlib
import json

import jax.numpy as jnp
import numpy as np
import pytest

from glmjax.bench import attention as bench_attention
from glmjax.model import model_config
from test_bench import _flags
from test_bench_step import _Clock


def test_the_attention_benchmark_gives_milliseconds_and_the_tflop_s_of_the_visible_pairs(
    monkeypatch, capsys):
  config = importlib.import_module("configs.base").get_config("local")
  config.data.seq_len, heads = 64, config.model.num_heads
  head_dim = config.model.hidden_size // heads
  _flags(monkeypatch, bench_attention, steps=3)
  seps = []

  def timed(fn, *args, steps):  # nothing runs: 2 ms forward, 5 ms forward and backward
    assert steps == 3
    seps.append(np.asarray(args[3]))
    return 0.002 if len(args) == 4 else 0.005

  monkeypatch.setattr(bench_attention, "_time", timed)
  bench_attention.main(config, [])
  figures = json.loads(capsys.readouterr().out)["implementations"]["xla"]
  assert figures["forward_ms"] == pytest.approx(2.0)
  assert figures["forward_backward_ms"] == pytest.approx(5.0)
  # Part A (sep keys for each of its sep queries) and Part B (query i sees keys 0..i).
  visible = sum(int(s) ** 2 + sum(i + 1 for i in range(int(s), 64)) for s in seps[0])
  # 4 FLOPs per visible pair and head dimension forward; the backward 2.5 times that.
  assert figures["tflops_forward_backward"] == pytest.approx(
      3.5 * 4 * visible * heads * head_dim / 0.005 / 1e12)


def test_the_attention_benchmark_times_the_config_s_dtype_and_skips_a_kernel_failing_its_check(
    monkeypatch, capsys):
  config = importlib.import_module("configs.base").get_config("local")
  config.data.seq_len, config.model.dtype = 128, "bfloat16"
  head_dim = config.model.hidden_size // config.model.num_heads
  _flags(monkeypatch, bench_attention, steps=2)
  checks, timed = [], []

  def check(name, **shape):
    checks.append((name, shape))
    return "cuDNN needs an NVIDIA GPU"

  def time_it(fn, *args, steps):  # nothing runs
    timed.append([a.dtype for a in args if a.ndim == 4])  # q, k, v (and the cotangent)
    return 0.001

  monkeypatch.setattr(bench_attention.attention_choice, "check_attention", check)
  monkeypatch.setattr(bench_attention, "_time", time_it)
  bench_attention.main(config, [])
  record = json.loads(capsys.readouterr().out)
  assert checks == [(name, dict(dtype=jnp.bfloat16, seq_len=128, head_dim=head_dim))
                    for name in ("cudnn", "tokamax")]
  assert record["implementations"]["cudnn"] == {"skipped": "cuDNN needs an NVIDIA GPU"}
  # xla alone is timed, forward then forward and backward, at the compute dtype.
  assert timed == [[jnp.bfloat16] * 3, [jnp.bfloat16] * 4]
  assert set(record["implementations"]["xla"]) == {"forward_ms", "forward_backward_ms",
                                                   "tflops_forward_backward"}
  assert record["dtype"] == "bfloat16"


class _Tuned:
  """An autotuning result: a context inside which tokamax uses the configurations it holds.
  `pruning`: its dumps takes prune_errors (tokamax 0.0.13) or nothing (0.0.12)."""

  def __init__(self, log, pruning=True):
    self.log, self.pruning = log, pruning

  def __enter__(self):
    self.log.append("enter")

  def __exit__(self, *exc):
    self.log.append("exit")

  def dumps(self, **options):
    if options and not self.pruning:
      raise TypeError("dumps() got an unexpected keyword argument 'prune_errors'")
    return '{"data": "tuned"}' + (" pruned" if options.get("prune_errors") else "")


def test_with_attention_autotune_tokamax_is_timed_again_under_the_configurations_it_picked(
    monkeypatch, capsys):
  """The autotuner searches the forward and backward at the benchmark's shape; the kernel is
  then traced and timed afresh inside its result, and nothing else is tuned."""
  import tokamax  # pylint: disable=import-outside-toplevel
  config = importlib.import_module("configs.base").get_config("local")
  config.data.seq_len, config.model.dtype = 128, "bfloat16"
  monkeypatch.setattr(bench_attention.attention_choice, "check_attention",
                      lambda name, **shape: None if name == "tokamax" else "not here")
  log = []

  def autotune(fn, *args, progress_bar):
    log.append(("autotune", len(args), progress_bar))
    assert [a.ndim for a in args] == [4, 4, 4, 1, 4]  # q, k, v, sep, the cotangent
    return _Tuned(log)

  def time_it(fn, *args, steps):
    log.append(("timed", len(args)))
    return 0.004 if "enter" in log and "exit" not in log else 0.008

  monkeypatch.setattr(tokamax, "autotune", autotune)
  monkeypatch.setattr(bench_attention, "_time", time_it)
  _flags(monkeypatch, bench_attention, steps=2)  # not asked: nothing is tuned
  bench_attention.main(config, [])
  assert "tokamax_autotuned" not in json.loads(capsys.readouterr().out)["implementations"]
  assert log == [("timed", 4), ("timed", 5), ("timed", 4), ("timed", 5)]
  log.clear()
  _flags(monkeypatch, bench_attention, steps=2, attention_autotune=True)
  bench_attention.main(config, [])
  implementations = json.loads(capsys.readouterr().out)["implementations"]
  assert log == [("timed", 4), ("timed", 5), ("timed", 4), ("timed", 5),  # xla, tokamax
                 ("autotune", 5, False), "enter", ("timed", 4), ("timed", 5), "exit"]
  assert implementations["tokamax"]["forward_backward_ms"] == pytest.approx(8.0)
  tuned = implementations["tokamax_autotuned"]
  assert tuned["forward_backward_ms"] == pytest.approx(4.0) and tuned["autotune_s"] >= 0
  assert tuned["configs"] == '{"data": "tuned"} pruned'
  # tokamax 0.0.12's result serializes without the pruning argument.
  monkeypatch.setattr(tokamax, "autotune", lambda *a, **k: _Tuned([], pruning=False))
  bench_attention.main(config, [])
  older = json.loads(capsys.readouterr().out)["implementations"]["tokamax_autotuned"]
  assert older["configs"] == '{"data": "tuned"}'
  # An autotuner that fails leaves its reason, not a crashed benchmark.
  monkeypatch.setattr(tokamax, "autotune", lambda *a, **k: (_ for _ in ()).throw(
      RuntimeError("no Mosaic GPU here")))
  bench_attention.main(config, [])
  failed = json.loads(capsys.readouterr().out)["implementations"]["tokamax_autotuned"]
  assert failed == {"skipped": "autotune failed: RuntimeError: no Mosaic GPU here"}


def test_the_attention_benchmark_times_every_kernel_also_those_auto_does_not_try(monkeypatch,
                                                                                capsys):
  # auto tries xla alone on a CPU; a kernel added to model_config.KERNELS is timed all the same,
  # and a TPU kernel, which a CPU would only interpret, is listed with the reason it is not.
  assert bench_attention.attention_choice.auto_order("cpu") == ("xla",)
  config = importlib.import_module("configs.base").get_config("local")
  config.data.seq_len, config.model.dtype = 128, "bfloat16"  # every kernel's dtype
  _flags(monkeypatch, bench_attention, steps=2)
  monkeypatch.setattr(bench_attention.attention_choice, "check_attention", lambda *a, **k: None)
  monkeypatch.setattr(bench_attention, "_time", lambda fn, *args, steps: 0.001)
  bench_attention.main(config, [])
  records = json.loads(capsys.readouterr().out)["implementations"]
  kernels = bench_attention.model_config.KERNELS
  assert set(records) == set(kernels)
  for name, kernel in kernels.items():
    assert ("skipped" in records[name]) == kernel.tpu, (name, records[name])


def test_an_attention_timing_leaves_out_the_call_that_compiles(monkeypatch):
  clock = _Clock()
  calls = []

  def jitted(*args):  # the first call traces and compiles (5 s of the host); each runs 2 ms
    calls.append(args)
    clock.advance(5.0 if len(calls) == 1 else 0.0)
    return clock.queue(0.002)

  monkeypatch.setattr(bench_attention, "time", clock)
  assert bench_attention._time(jitted, "q", "k", steps=4) == pytest.approx(0.002)
  assert calls == [("q", "k")] * (1 + 4)
  assert clock.busy and not any(clock.busy)  # no reading while device work was still queued


def _records_and_checked(monkeypatch, capsys, dtype: str, platform: str, seq_len: int):
  """bench_attention.main at T=seq_len on `platform`, nothing timed: (its records, the kernels
  whose start-up check it ran)."""
  config = importlib.import_module("configs.base").get_config("local")
  config.data.seq_len, config.model.dtype = seq_len, dtype
  _flags(monkeypatch, bench_attention, steps=2)
  checked = []
  monkeypatch.setattr(bench_attention.jax, "default_backend", lambda: platform)
  monkeypatch.setattr(bench_attention.attention_choice, "check_attention",
                      lambda name, **shape: checked.append(name))
  monkeypatch.setattr(bench_attention, "_time", lambda fn, *args, steps: 0.001)
  bench_attention.main(config, [])
  return json.loads(capsys.readouterr().out)["implementations"], checked


@pytest.mark.parametrize("dtype, platform, seq_len, kernels, reason", [
    # cuDNN and tokamax at float32: their check's error off a GPU would be "cuDNN is not
    # detected".
    ("float32", "cpu", 128, model_config.SIXTEEN_BIT_ONLY,
     lambda name: "it runs 16-bit inputs only, not float32"),
    # Splash on a TPU at T=64, not a multiple of its block.
    ("bfloat16", "tpu", 64, model_config.SPLASH, lambda name: "it needs a sequence length that is a multiple "
     f"of {bench_attention.model_config.seq_len_multiple(name)}, not 64"),
    # tokamax's GPU kernel masks in chunks of 128 query rows.
    ("bfloat16", "gpu", 192, ("tokamax",),
     lambda name: "it needs a sequence length that is a multiple of 128, not 192"),
])
def test_a_kernel_that_never_takes_the_config_s_dtype_or_length_is_skipped_with_that_reason(
    dtype, platform, seq_len, kernels, reason, monkeypatch, capsys):
  records, checked = _records_and_checked(monkeypatch, capsys, dtype, platform, seq_len)
  assert kernels and not set(checked) & set(kernels)  # their start-up check is not run
  for name in kernels:
    assert records[name] == {"skipped": reason(name)}
