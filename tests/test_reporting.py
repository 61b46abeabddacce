"""What glmjax reports about sizes and files: a compiled step's memory in GiB, the state's bytes
on one device, the device's limit that a save's copy of the state is checked against, and the
checkpoint tensors an import leaves out or cannot read; and a workdir read back on a host
unlike the one that trained it."""
import json
import logging
import re
import shutil
import struct
import types

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from glmjax import checkpoint as checkpoint_lib
from glmjax import config as config_lib
from glmjax import memory, parallel, pretrained
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
  (tmp_path / "config.json").write_text(json.dumps({"seed": 7, "data": {"batch_size": 24}}))
  pretrained.read_config(str(tmp_path))  # every field known: nothing to warn about
  assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def _tiny_workdir(workdir, **model):
  """A workdir as `convert import` writes it: config.json and random parameters at step 0."""
  config = config_lib.default_config()
  config.model.update(**{**dict(vocab_size=64, hidden_size=16, num_layers=2, num_heads=2,
                               max_position=8, dtype="float32"), **model})
  model_config = ModelConfig.from_config(config.model)
  rng = np.random.default_rng(0)
  tensors = {key: rng.standard_normal(shape).astype(np.float32)
             for key, shape in mapping.expected_shapes(model_config).items()}
  params, _ = mapping.to_params(tensors, model_config)
  pretrained.save(str(workdir), config, params)
  return params


def test_a_workdir_whose_run_picked_another_platform_s_kernel_loads_with_this_host_s(tmp_path):
  """A run trained on TPU saved model.attention='splash'; reading it back here (generate,
  evaluate, export) uses the attention asked for, not a kernel this host cannot run."""
  params = _tiny_workdir(tmp_path, attention="splash")
  loaded = pretrained.load(str(tmp_path), attention="xla")
  assert loaded.model_config.attention == "xla" and loaded.step == 0
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded.params), params)


def test_a_workdir_whose_checkpoints_folder_is_empty_is_refused_as_having_no_checkpoint_yet(
    tmp_path):
  """A run stopped before its first save leaves checkpoints/ empty: the one line says so and
  how to get one, as for a workdir without the folder."""
  _tiny_workdir(tmp_path)
  shutil.rmtree(tmp_path / "checkpoints")
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(FileNotFoundError, match="has a config.json but no checkpoint yet; give a "
                                              r"workdir whose run has saved one \(checkpoint"):
    pretrained.load(str(tmp_path))


def test_a_workdir_from_a_slice_whose_mesh_this_host_cannot_build_loads_fsdp_over_all_devices(
    tmp_path):
  """Trained with tensor parallelism over more chips than this host has: the parameters are
  read back sharded over every local device by fsdp alone (no tensor axis left from the run)."""
  params = _tiny_workdir(tmp_path)
  saved = json.loads((tmp_path / "config.json").read_text())
  saved["mesh"].update(data=2, fsdp=2, tensor=16)  # 64 chips
  (tmp_path / "config.json").write_text(json.dumps(saved))
  loaded = pretrained.load(str(tmp_path), attention="xla")
  assert dict(loaded.mesh.shape) == {"data": 1, "fsdp": jax.device_count(), "tensor": 1}
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded.params), params)


def test_a_workdir_whose_hidden_size_this_host_s_device_count_does_not_divide_still_loads(
    tmp_path):
  """GLM-10B's mesh.fsdp=-1 read on 6 GPUs would cut its 4096 wide arrays 6 ways and die in the
  middle of the restore. Here 12 wide on 8 devices: fsdp over 4 of them, replicated twice."""
  params = _tiny_workdir(tmp_path, hidden_size=12)
  saved = json.loads((tmp_path / "config.json").read_text())
  saved["mesh"].update(data=1, fsdp=-1, tensor=1)
  (tmp_path / "config.json").write_text(json.dumps(saved))
  loaded = pretrained.load(str(tmp_path), attention="xla")
  assert dict(loaded.mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded.params), params)


def test_a_workdir_loads_onto_the_mesh_its_caller_gives(tmp_path):
  """`load(mesh=...)` is how a program with its own mesh (tensor parallel here, not the run's
  fsdp) reads a workdir: the parameters come back on that mesh, unchanged."""
  params = _tiny_workdir(tmp_path)
  mesh_config = config_lib.default_config().mesh
  mesh_config.update(data=1, fsdp=4, tensor=2)
  mesh = parallel.make_mesh(mesh_config)
  loaded = pretrained.load(str(tmp_path), mesh=mesh, attention="xla")
  assert loaded.mesh is mesh
  assert {leaf.sharding.mesh.shape["tensor"] for leaf in jax.tree.leaves(loaded.params)} == {2}
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded.params), params)


def test_a_workdir_whose_config_no_longer_fits_its_parameters_is_refused_naming_the_workdir(
    tmp_path):
  """config.json edited after the save (a wider model): evaluate, generate and export read the
  workdir, so the refusal names --workdir, not the training-only checkpoint.init_from."""
  _tiny_workdir(tmp_path)
  saved = json.loads((tmp_path / "config.json").read_text())
  saved["model"]["hidden_size"] = 32
  (tmp_path / "config.json").write_text(json.dumps(saved))
  with pytest.raises(checkpoint_lib.IncompatibleCheckpointError,
                     match=r"^--workdir: the parameters at step 0 in .* do not fit this model: "
                           r"block_position_embeddings: checkpoint \[\[9, 16\], 'float32'\] vs "
                           r"model \[\[9, 32\], 'float32'\]"):  # saved 16 wide, now 32
    pretrained.load(str(tmp_path), attention="xla")


def test_a_torn_config_json_is_named_with_how_to_restore_it(tmp_path):
  (tmp_path / "config.json").write_text('{"model": {"hidden_size": 16,')  # cut mid-write
  where = re.escape(str(tmp_path / "config.json"))
  with pytest.raises(ValueError, match=rf"^{where} is not valid JSON .*; restore it from the "
                                       "checkpoint's metadata"):
    pretrained.read_config(str(tmp_path))


def _header_file(path, header: bytes, data: bytes = b"") -> str:
  path.write_bytes(struct.pack("<Q", len(header)) + header + data)
  return str(path)


def test_a_file_that_is_not_a_readable_safetensors_file_is_named_with_what_is_wrong(tmp_path):
  """An interrupted download, an error page saved under the file's name, a tensor in a dtype
  glmjax has no numpy type for: one ValueError naming the file, not a struct/KeyError trace."""
  empty = tmp_path / "empty.safetensors"
  empty.write_bytes(b"\0\0\0")
  with pytest.raises(ValueError, match=r"empty.safetensors: not a safetensors file \(shorter"):
    safetensors_io.read(str(empty))
  page = tmp_path / "page.safetensors"
  page.write_bytes(b"<!DOCTYPE html><html><body>Sign in to download</body></html>")
  with pytest.raises(ValueError, match=r"page.safetensors: not a safetensors file \(header "
                                       r"length \d+ bytes\)"):
    safetensors_io.read(str(page))
  garbled = _header_file(tmp_path / "garbled.safetensors", b'{"w": {"dtype": "F32",')
  with pytest.raises(ValueError, match="garbled.safetensors: the safetensors header is not JSON"):
    safetensors_io.read(garbled)
  fp8 = _header_file(tmp_path / "fp8.safetensors", json.dumps(
      {"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}).encode(), b"\0\0")
  with pytest.raises(ValueError, match=r"fp8.safetensors: tensor 'w' has dtype F8_E4M3, which "
                                       r"glmjax does not read \(expected one of \['BF16'"):
    safetensors_io.read(fp8)


def test_a_checkpoint_s_layer_count_counts_layers_numbered_past_9():
  """GLM-10B has 48 layers: transformer.layers.10 and up are layers, not tensors left over."""
  keys = [f"transformer.layers.{i}.{suffix}" for i in range(12)
          for suffix in ("input_layernorm.weight", "mlp.dense_4h_to_h.bias")]
  tensors = {key: np.zeros(2, np.float32) for key in keys + ["word_embeddings.weight"]}
  assert mapping.count_layers(tensors) == 12
  del tensors["transformer.layers.10.input_layernorm.weight"]
  del tensors["transformer.layers.10.mlp.dense_4h_to_h.bias"]
  with pytest.raises(mapping.CheckpointMismatchError,
                     match=r"transformer\.layers\.10\.\* is missing \(the checkpoint has layers "
                           r"up to 11\)"):
    mapping.count_layers(tensors)


def test_tensors_read_from_a_safetensors_file_cannot_write_into_it(tmp_path):
  """They are views of the file itself: an in-place update of one must fail, not change the
  user's downloaded checkpoint on disk."""
  path = tmp_path / "model.safetensors"
  safetensors_io.write(str(path), {"w": np.arange(4, dtype=np.float32)})
  before = path.read_bytes()
  tensors, _ = safetensors_io.read(str(path))
  with pytest.raises(ValueError, match="read-only"):
    tensors["w"] += 1
  del tensors
  assert path.read_bytes() == before
