"""Benchmarks: `python -m glmjax.bench --what=NAME --config=...` (data, prepare, step, save,
attention, sweep, profile, ceiling, traffic).

Each benchmark lives in its own module here and prints one JSON line.
"""
import importlib

from glmjax import memory


def run(what: str, config, argv: list[str]) -> None:
  """glmjax.bench.WHAT.main(config, argv); a config too big for the device's memory (XLA's
  RESOURCE_EXHAUSTED, a traceback of pages otherwise) as one ValueError line saying what to
  change."""
  module = importlib.import_module(f"glmjax.bench.{what}")
  try:
    module.main(config, argv)
  except Exception as error:  # noqa: BLE001 - jax raises its runtime errors as one type
    first = memory.out_of_memory(error)
    if first is None:  # not a quota or an RPC's
      raise
    raise ValueError(
        f"--what={what}: the config does not fit in this device's memory ({first}); try a "
        "smaller --config.data.batch_size, --config.model.remat=full, or a smaller config "
        "(on a CPU: --config=configs/base.py:local)") from error
