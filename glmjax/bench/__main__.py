"""Dispatch `python -m glmjax.bench --what=NAME` to glmjax.bench.NAME.main(config, argv)."""
from absl import flags
from ml_collections import config_flags

from glmjax import bench, cli, logs

BENCHMARKS = ("data", "prepare", "step", "save", "sweep", "attention", "profile", "ceiling",
              "traffic")

_WHAT = flags.DEFINE_enum("what", "data", BENCHMARKS, "Which benchmark to run.")
flags.DEFINE_integer("steps", 0, "Iterations to time (0: the benchmark's default).")
flags.DEFINE_string("sweep_batch", "", "sweep: batch sizes, e.g. '4,8,16' (default: B/2, B, 2B).")
flags.DEFINE_string("sweep_remat", "", "sweep: remat policies (default: none,minimal,full).")
flags.DEFINE_string("sweep_attention", "", "sweep: kernels (default: what auto tries here).")
flags.DEFINE_string("sweep_loss_chunk", "", "sweep: train.loss_chunk values (default: config's).")
flags.DEFINE_multi_string("sweep_set", [], "sweep: FIELD=V1,V2, more config values to try, "
                          "e.g. train.dropout_rng=threefry2x32,rbg (repeatable).")
flags.DEFINE_string("profile_dir", "", "profile: where the trace goes (default: a new temporary "
                    "folder).")
flags.DEFINE_bool("attention_autotune", False, "attention: also autotune tokamax's GPU kernel "
                  "at the shape and time it with the configurations found.")
flags.DEFINE_string("traffic_hlo", "", "traffic: an optimized HLO text file XLA dumped "
                    "(*after_optimizations.txt).")
flags.DEFINE_string("traffic_topology", "", "traffic: NVIDIA GPUs (h100, h200, h100-8) to "
                    "compile the config's train step for here, and read, instead of a file.")
flags.DEFINE_integer("ceiling_n", 8192, "ceiling: the matrix size N of the timed N-cubed product.")
_CONFIG = config_flags.DEFINE_config_file("config", "configs/large.py", "Run config file.",
                                          lock_config=True)


def main(argv):
  # glmjax's progress lines on stderr; libraries' (Orbax's INFO on every save) only from WARNING.
  logs.setup_console(0)
  if flags.FLAGS.steps < 0:  # else found only after the compile, as a prefetch error
    raise ValueError(f"--steps={flags.FLAGS.steps}: give the steps to time (0: the "
                     "benchmark's default)")
  bench.run(_WHAT.value, _CONFIG.value, argv[1:])


if __name__ == "__main__":
  # A tokenizer, corpus or folder that is not there, or a value the benchmark cannot use.
  cli.run(main, validate=True, user_errors=(ValueError, OSError))
