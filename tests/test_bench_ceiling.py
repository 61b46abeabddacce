"""`bench --what=ceiling`: the matmul rate and copy bandwidth the device really gives."""
import types

import pytest

from glmjax.bench import ceiling
from test_bench_step import _Clock


def test_the_ceiling_counts_a_matmul_s_flops_and_a_copy_s_bytes_read_and_written(monkeypatch):
  timed = []

  def fake_timed(fn, *args):
    timed.append([a.shape for a in args])
    return 0.5 if len(args) == 2 else 0.25
  monkeypatch.setattr(ceiling, "timed", fake_timed)
  record = ceiling.measure(64)
  # One 64-cubed product of two random bf16 matrices; one pass over 64*64/32 x 1024 values.
  assert timed == [[(64, 64), (64, 64)], [(128, 1024)]]
  assert record["bf16_matmul_tflops"] == pytest.approx(2 * 64 ** 3 / 0.5 / 1e12)
  assert record["copy_tb_per_s"] == pytest.approx(2 * 128 * 1024 * 2 / 0.25 / 1e12)
  assert record["what"] == "ceiling" and record["n"] == 64


def test_the_ceiling_times_the_mean_of_its_runs_after_a_compiling_one():
  calls = []
  seconds = ceiling.timed(lambda x: calls.append(x) or x, 3)
  assert len(calls) == ceiling.RUNS + 1 and 0 <= seconds < 0.1


def test_the_ceiling_s_clock_starts_after_the_compiling_run_has_finished(monkeypatch):
  clock = _Clock()
  calls = []

  def jitted(x):  # the first call traces and compiles (5 s of the host); each runs 3 ms
    calls.append(x)
    clock.advance(5.0 if len(calls) == 1 else 0.0)
    return clock.queue(0.003)

  monkeypatch.setattr(ceiling, "time", clock)
  assert ceiling.timed(jitted, "x") == pytest.approx(0.003)
  assert len(calls) == ceiling.RUNS + 1
  assert clock.busy and not any(clock.busy)  # no reading while device work was still queued


@pytest.mark.parametrize("size", [0, -32, 100])
def test_a_ceiling_size_that_is_no_positive_multiple_of_32_is_one_line(monkeypatch, size):
  monkeypatch.setattr(ceiling, "flags", types.SimpleNamespace(
      FLAGS=types.SimpleNamespace(ceiling_n=size)))
  with pytest.raises(ValueError, match=rf"--ceiling_n={size}: give a positive multiple of 32"):
    ceiling.main(None, [])
