"""What glmjax reports about sizes and files: a compiled step's memory in GiB, the state's bytes
on one device, the device's limit that a save's copy of the state is checked against, and the
checkpoint tensors an import leaves out or cannot read."""
import json
import logging
import struct
import types

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from glmjax import memory, pretrained
from glmjax.convert import mapping, safetensors_io
from glmjax.model import ModelConfig

GIB = 2**30


def test_the_compiled_step_s_memory_line_is_in_gib():
  analysis = types.SimpleNamespace(argument_size_in_bytes=3 * GIB, output_size_in_bytes=GIB // 2,
                                   alias_size_in_bytes=0, temp_size_in_bytes=5 * GIB // 4)
  compiled = types.SimpleNamespace(memory_analysis=lambda: analysis)
  assert memory.memory_summary(compiled) == (
      "per device: arguments 3.00 GiB, outputs 0.50 GiB, temporaries 1.25 GiB")


def test_the_state_s_bytes_per_device_count_one_device_s_shard_of_each_array():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("fsdp",))
  sharded = jax.device_put(np.zeros((8, 4), np.float32), NamedSharding(mesh, P("fsdp")))
  replicated = jax.device_put(np.zeros((3,), np.int32), NamedSharding(mesh, P()))
  # One row of 4 float32 from the sharded array, all 3 int32 of the replicated one.
  assert memory.state_bytes_per_device({"w": sharded, "step": replicated}) == 4 * 4 + 3 * 4


def test_the_device_s_memory_limit_is_what_it_may_allocate_not_what_it_holds_now(monkeypatch):
  device = types.SimpleNamespace(
      memory_stats=lambda: {"bytes_limit": 16 * GIB, "bytes_in_use": 2 * GIB,
                            "peak_bytes_in_use": 3 * GIB})
  monkeypatch.setattr(jax, "local_devices", lambda: [device])
  assert memory.device_memory_limit() == 16 * GIB
  monkeypatch.setattr(jax, "local_devices", lambda: [types.SimpleNamespace(memory_stats=dict)])
  assert memory.device_memory_limit() is None  # a backend that reports no limit


def test_an_import_names_the_checkpoint_s_tensors_that_are_not_part_of_the_network():
  model_config = ModelConfig(vocab_size=64, hidden_size=16, num_layers=2, num_heads=2,
                             max_position=8)
  tensors = {key: np.zeros(shape, np.float32)
             for key, shape in mapping.expected_shapes(model_config).items()}
  extra = ["lm_head.weight", "transformer.layers.1.attention.rotary_emb.inv_freq"]
  tensors.update({key: np.zeros(4, np.float32) for key in extra})
  _, unused = mapping.to_params(tensors, model_config)
  assert unused == extra


def test_a_cut_off_safetensors_file_is_named_as_cut_off(tmp_path):
  path = tmp_path / "model.safetensors"
  safetensors_io.write(str(path), {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                                   "b": np.ones(10, np.float32)})
  data = path.read_bytes()
  path.write_bytes(data[:-8])  # a download that stopped two floats short
  with pytest.raises(ValueError, match=r"model.safetensors: tensor 'b' runs past the end of the "
                     r"file .* cut off or damaged"):
    safetensors_io.read(str(path))


def test_a_written_safetensors_file_s_data_starts_8_byte_aligned(tmp_path):
  """As the safetensors library writes it: each tensor is a view of the memory map that needs
  no copy. Names of 1 to 8 letters give headers of every length modulo 8."""
  for length in range(1, 9):
    path = tmp_path / f"model-{length}.safetensors"
    name = "w" * length
    safetensors_io.write(str(path), {name: np.ones((3, 5), np.float32)}, {"format": "pt"})
    (size,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert (8 + size) % 8 == 0, length
    tensors, metadata = safetensors_io.read(str(path))
    np.testing.assert_array_equal(tensors[name], np.ones((3, 5), np.float32))
    assert metadata == {"format": "pt"}


def test_a_workdir_s_saved_fields_this_version_lacks_are_named_in_one_warning(tmp_path, caplog,
                                                                             monkeypatch):
  """A workdir written by another version still loads; what it says that this one cannot use is
  named, not dropped silently."""
  (tmp_path / "config.json").write_text(json.dumps(
      {"seed": 7, "data": {"batch_size": 24, "old_knob": 1}, "retired_section": {"x": 1}}))
  monkeypatch.setattr(logging.getLogger("glmjax"), "propagate", True)  # a console set up earlier
  with caplog.at_level(logging.WARNING, logger="glmjax.pretrained"):
    config = pretrained.read_config(str(tmp_path))
  assert config.seed == 7 and config.data.batch_size == 24
  (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert warning.endswith("fields this version does not know are ignored: data.old_knob, "
                          "retired_section")
  caplog.clear()
  pretrained.read_config(str(tmp_path), warn=False)  # a second reading does not repeat it
  assert not [r for r in caplog.records if r.levelno == logging.WARNING]
