"""The attention settings validation and start-up decide: what a kernel or dtype cannot honour is
refused, what `auto` picks on each platform and dtype, and the dtype the start-up check runs."""
import importlib
import sys
import types

import jax
import pytest

from glmjax import attention_choice
from glmjax import config as config_lib


def _local():
  return importlib.import_module("configs.base").get_config("local")


@pytest.mark.parametrize("overrides, message", [
    # Every choice that works is named: the README says the refusal names the choices.
    (dict(dtype="float16"), r"model.dtype='float16' needs loss scaling.*use model.dtype=bfloat16 "
     r"\(TPU, A100, H100\) or float32\.$"),
    (dict(attention="splash", attention_dropout=0.1),
     r"model.attention='splash' has no attention dropout.*model.attention=xla \(or auto\) to "
     r"keep it, or model.attention_dropout=0\.$"),
    (dict(attention="cudnn", attention_dropout=0.05), r"model.attention='cudnn'"),
])
def test_semantics_a_kernel_or_dtype_cannot_honour_are_refused_at_start_up(overrides, message):
  config = _local()
  config.model.update(**overrides)
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(config)


def test_attention_dropout_makes_auto_mean_xla_for_training_only():
  config = _local()
  config.model.update(attention="auto", attention_dropout=0.1)
  for platform in ("tpu", "cpu"):  # a TPU target too: auto would be splash there
    assert attention_choice.resolved_model_config(config, platform).attention == "xla"
  assert attention_choice.resolved_model_config(config, "tpu", training=False).attention == "splash"
  config.model.attention_dropout = 0.0
  assert attention_choice.resolved_model_config(config, "tpu").attention == "splash"


def test_splash_needs_a_sequence_length_on_its_block_and_auto_picks_another_kernel_off_it():
  config = _local()
  config.model.update(attention="splash", max_position=200)
  config.data.seq_len = 200
  with pytest.raises(config_lib.ConfigError,
                     match=r"model.attention='splash'.*data.seq_len=200 must be a multiple of 128"):
    config_lib.validate(config)
  # The per-example-mask splash tiles rows the same way: 192 (3 blocks of 64) is refused too.
  config.model.attention, config.data.seq_len = "splash_dynamic", 192
  with pytest.raises(config_lib.ConfigError, match=r"model.attention='splash_dynamic'.*"
                                                   r"data.seq_len=192 must be a multiple of 128"):
    config_lib.validate(config)
  config.data.seq_len = 200
  config.model.attention = "auto"
  config_lib.validate(config)
  # Compiling for a TPU slice from this host (aot): auto's unchecked pick skips splash.
  assert attention_choice.resolved_model_config(config, "tpu").attention == "xla"
  config.data.seq_len = 256
  assert attention_choice.resolved_model_config(config, "tpu").attention == "splash"


@pytest.mark.parametrize("capability, picked", [("9.0", "tokamax"), ("10.0", "tokamax"),
                                                ("8.0", "cudnn"), ("8.9", "cudnn"),
                                                ("12.0", "cudnn")],
                         ids=["H100", "B200", "A100", "L40S", "RTX 5090"])
def test_auto_for_a_gpu_target_takes_tokamax_on_sm90_and_sm100_and_cudnn_on_other_gpus(
    monkeypatch, capability, picked):
  # Compiled for a GPU unchecked (not this host's platform): tokamax's Mosaic GPU kernel runs
  # on sm90 and sm100 only (it refuses others), so other GPUs get the next choice, cuDNN.
  import tokamax  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  gpu = types.SimpleNamespace(platform="gpu", compute_capability=capability)
  monkeypatch.setattr(jax, "devices", lambda backend=None: [gpu])
  assert attention_choice.unvalidated_default("gpu", 512) == picked


def test_tokamax_needs_whole_chunks_of_128_rows_and_auto_for_a_gpu_takes_cudnn_off_them():
  config = _local()
  config.model.update(attention="tokamax", dtype="bfloat16", max_position=200)
  config.data.seq_len = 192
  with pytest.raises(config_lib.ConfigError, match=r"model.attention='tokamax'.*"
                                                   r"data.seq_len=192 must be a multiple of 128"):
    config_lib.validate(config)
  h100 = types.SimpleNamespace(platform="gpu", compute_capability="9.0")
  assert attention_choice.unvalidated_default("gpu", 192, h100) == "cudnn"
  assert attention_choice.unvalidated_default("gpu", 256, h100) == "tokamax"


def test_a_gpu_program_asked_for_off_a_gpu_host_without_a_device_does_not_pick_tokamax():
  # No GPU here to read a compute capability from: tokamax is not assumed to run.
  assert not attention_choice._tokamax_usable()


def test_without_the_tokamax_package_auto_for_an_sm90_gpu_takes_cudnn(monkeypatch):
  monkeypatch.setitem(sys.modules, "tokamax", None)  # `import tokamax` raises ImportError
  h100 = types.SimpleNamespace(platform="gpu", compute_capability="9.0")
  assert not attention_choice._tokamax_usable(h100)
  assert attention_choice.unvalidated_default("gpu", 512, h100) == "cudnn"


def test_the_start_up_check_runs_at_the_run_s_dtype_sequence_length_and_head_size(monkeypatch):
  config = _local()
  config.model.update(attention="auto", dtype="float32", hidden_size=64, max_position=200)
  monkeypatch.setitem(attention_choice.AUTO_ORDER, "cpu", ("splash", "xla"))
  # The real check (splash in interpret mode here) passes at T=128 and fails at T=200.
  assert attention_choice.resolved_model_config(config).attention == "splash"
  assert "needs seq_len divisible by 128" in attention_choice.check_attention(
      "splash", dtype="float32", seq_len=200, head_dim=16)
  seen = []
  monkeypatch.setattr(attention_choice, "check_attention",
                      lambda name, **shape: seen.append((name, shape)))
  config.data.seq_len = 200  # auto skips splash off its block without running the check
  assert attention_choice.resolved_model_config(config).attention == "xla" and not seen
  # A long run is checked at 2048 plus its length mod 128: the block rules answer as at T,
  # while the float32 reference's [T, T] scores stay small.
  for seq_len, checked in ((384, 384), (5120, 2048), (5000, 2056), (4160, 2112)):
    config.data.seq_len = seq_len
    seen.clear()
    attention_choice.resolved_model_config(config)
    if seq_len % 128 == 0:
      assert seen == [("splash", dict(dtype="float32", seq_len=checked, head_dim=16,
                                      device=jax.devices("cpu")[0]))]
    else:
      assert seen == [] and attention_choice.check_length(seq_len) == checked
  # And at the run's dtype whichever it is, not float32 alone: a bfloat16 run checks bfloat16.
  config.model.dtype, config.data.seq_len = "bfloat16", 384
  seen.clear()
  attention_choice.resolved_model_config(config)
  assert seen == [("splash", dict(dtype="bfloat16", seq_len=384, head_dim=16,
                                  device=jax.devices("cpu")[0]))]
