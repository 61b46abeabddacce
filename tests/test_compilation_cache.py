"""Compiled programs persist between runs: under the workdir, a configured folder, or the
environment's JAX_COMPILATION_CACHE_DIR."""
import importlib
import os

import jax

from glmjax import train
from glmjax import workdir as workdir_lib


def test_the_cache_folder_is_the_environments_then_the_configured_then_the_workdirs():
  env = {"JAX_COMPILATION_CACHE_DIR": "/shared/cache"}
  assert workdir_lib.compilation_cache_dir("/mine", "/run", env) == "/shared/cache"
  assert workdir_lib.compilation_cache_dir("none", "/run", env) == "/shared/cache"  # it wins
  assert workdir_lib.compilation_cache_dir("/mine", "/run", {}) == "/mine"
  assert workdir_lib.compilation_cache_dir("", "/run", {}) == "/run/xla_cache"
  assert workdir_lib.compilation_cache_dir("none", "/run", {}) == ""
  assert workdir_lib.compilation_cache_dir("", "gs://b/run", {}) == "gs://b/run/xla_cache"


def test_the_train_command_turns_the_cache_on_before_it_compiles(tmp_path, monkeypatch):
  seen = {}
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  # The command's console and log-file set-up would change logging for the tests after this one.
  monkeypatch.setattr(train.logs, "setup_console", lambda process_index: None)
  monkeypatch.setattr(train.logs, "attach_file", lambda path, shown=None: None)
  monkeypatch.setattr(train, "train_and_evaluate", lambda config, workdir, flag: seen.update(
      cache=jax.config.jax_compilation_cache_dir))
  before = jax.config.jax_compilation_cache_dir
  try:
    config = importlib.import_module("configs.base").get_config("local")
    train.run(config, str(tmp_path))
  finally:
    jax.config.update("jax_compilation_cache_dir", before)  # the tests' shared cache
  assert seen["cache"] == os.path.join(str(tmp_path), "xla_cache")
