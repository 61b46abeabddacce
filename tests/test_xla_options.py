"""glmjax's XLA compiler options: one table per target platform, XLA_FLAGS wins over it, and
the programs are compiled with it."""
import dataclasses
import importlib
import os

import jax
import jax.numpy as jnp
import pytest

from glmjax import attention_choice, parallel, step as step_lib, xla_options

SLICE_FUSION = "xla_gpu_enable_dynamic_slice_fusion"


def test_gpu_programs_go_without_the_slice_fusion_that_ran_each_attention_forward_twice():
  assert xla_options.for_platform("gpu", "") == {SLICE_FUSION: False}
  assert xla_options.for_platform("tpu", "") == {}
  assert xla_options.for_platform("cpu", "") == {}


@pytest.mark.parametrize("flags", [f"--{SLICE_FUSION}=true", f"--xla_dump_to=/tmp/x --{SLICE_FUSION}",
                                   f"  --{SLICE_FUSION}=false  "])
def test_an_option_that_xla_flags_names_is_left_to_the_flag(flags):
  assert xla_options.for_platform("gpu", flags) == {}


def test_an_option_xla_flags_does_not_name_stays():
  assert xla_options.for_platform("gpu", "--xla_gpu_enable_cublaslt=true") == {SLICE_FUSION: False}


@pytest.mark.parametrize("platform", ["gpu", "tpu", "cpu"])
def test_every_option_in_the_table_is_one_xla_accepts(platform):
  """XLA refuses an unknown option name or a value of the wrong type, whatever the backend, so
  compiling on the CPU checks each platform's table."""
  options = xla_options.for_platform(platform, "")
  lowered = jax.jit(lambda x: x * 2).lower(jnp.ones(4))
  assert float(lowered.compile(compiler_options=options)(jnp.ones(4))[0]) == 2.0
  with pytest.raises(Exception, match="xla_gpu_enable_dynamic_slice_fusionn"):
    lowered.compile(compiler_options={**options, SLICE_FUSION + "n": False})


def _tiny_program(platform=None):
  config = importlib.import_module("configs.base").get_config("local")
  config.model.update(hidden_size=32, num_heads=2, num_layers=1, attention="xla")
  config.data.update(seq_len=32, batch_size=8)
  config.mesh.update(data=8, fsdp=1, tensor=1)
  mesh, rules = parallel.make_mesh(config.mesh), parallel.logical_rules(config.mesh)
  with parallel.activate(mesh, rules):
    program = step_lib.build_program(config, mesh, rules,
                                     attention_choice.resolved_model_config(config, platform))
  return config, mesh, rules, program


def test_the_train_and_eval_steps_are_compiled_with_the_programs_options():
  config, mesh, rules, program = _tiny_program()
  assert program.compiler_options == {}  # built on this CPU
  # A known option with a value XLA refuses: only a compile that is given it fails.
  wrong = dataclasses.replace(program, compiler_options={SLICE_FUSION: "maybe"})
  with parallel.activate(mesh, rules):
    with pytest.raises(Exception, match="not a valid bool value"):
      wrong.compile_train_step(config, mesh)
    with pytest.raises(Exception, match="not a valid bool value"):
      wrong.compile_eval_step(config, mesh)


def test_an_option_this_xla_does_not_know_is_dropped_with_a_warning_not_a_failed_compile(caplog):
  lowered = jax.jit(lambda x: x * 2).lower(jnp.ones(4))
  with caplog.at_level("WARNING", logger="glmjax.xla_options"):
    program = xla_options.compiled(lowered, {"xla_no_such_option": True, SLICE_FUSION: False})
  assert float(program(jnp.ones(4))[0]) == 2.0
  assert "xla_no_such_option" in caplog.text and "compiling without them" in caplog.text


def test_a_program_for_the_gpu_carries_the_gpu_options_and_one_for_a_tpu_its_own(monkeypatch):
  devices = os.environ.get("XLA_FLAGS", "")  # conftest's, in case jax starts in this test
  monkeypatch.setenv("XLA_FLAGS", devices)
  assert _tiny_program("gpu")[3].compiler_options == {SLICE_FUSION: False}
  assert _tiny_program("tpu")[3].compiler_options == {}
  monkeypatch.setenv("XLA_FLAGS", f"{devices} --{SLICE_FUSION}=true")
  assert _tiny_program("gpu")[3].compiler_options == {}
