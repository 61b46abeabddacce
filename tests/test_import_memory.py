"""convert import's and export's host memory: a 16-bit GLM-10B is 20 GB of source arrays and
40 GB of float32 parameters, so each command must hold them about once. numpy's arrays are
counted by tracemalloc (Orbax's and TensorStore's own buffers are not), so each test measures
the arrays it makes."""
import gc
import json
import logging
import re
import time
import tracemalloc
import weakref

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch

import convert_sources as sources
import original_glm as og
from convert_sources import H, HEADS, L, MSL, V
from glmjax import config as config_lib
from glmjax import checkpoint, checksums, convert, pretrained
from glmjax.convert import mapping
from glmjax.model import ModelConfig

SHAPE = dict(vocab_size=2048, hidden_size=256, num_layers=4, num_heads=2, max_position=64)
MODEL = ModelConfig(**SHAPE)  # 15 MB of float32 parameters, far above a save's own objects


def _source(seed=0):
  """16-bit arrays under the original names, as a released checkpoint holds them."""
  rng = np.random.default_rng(seed)
  return {key: rng.standard_normal(shape, np.float32).astype(np.float16)
          for key, shape in mapping.expected_shapes(MODEL).items()}


def _bytes(tree):
  return sum(leaf.nbytes for leaf in jax.tree.leaves(tree))


def _traced_peak(make):
  """(what make() returns, the most bytes its allocations held at once)."""
  gc.collect()
  tracemalloc.start()
  try:
    result = make()
    return result, tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()


def test_a_consuming_conversion_gives_the_same_parameters_and_empties_the_source():
  kept, consumed = _source(), _source()
  expected, _ = mapping.to_params(kept, MODEL)
  params, unused = mapping.to_params(consumed, MODEL, consume=True)
  assert unused == [] and consumed == {} and len(kept) == len(mapping.expected_shapes(MODEL))
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected), strict=True):
    assert a.dtype == np.float32 and np.array_equal(a, b)


@pytest.mark.parametrize("consume", [False, True])
def test_converting_holds_the_float32_parameters_about_once_beside_the_source(consume):
  """Without consume, the source stays (the caller's) and the parameters are added to it once:
  no float32 copy of every layer beside their stack. With it, each source array goes once it
  is converted, so at the end only the parameters are held."""
  params, peak = _traced_peak(lambda: mapping.to_params(_source(), MODEL, consume=consume)[0])
  f32 = _bytes(params)
  largest_stack = max(leaf.nbytes for leaf in jax.tree.leaves(params["layers"]))
  source = f32 // 2
  if consume:
    assert peak <= f32 + largest_stack // 2 + 2**20, (peak, f32)
  else:
    # The source (made inside the measurement) and the parameters, with one layer's
    # transposed 16-bit array at a time beside them.
    assert peak <= source + f32 + largest_stack // 2 + 2**20, (peak, source, f32)


def test_saving_imported_parameters_makes_no_second_copy_of_them_and_later_saves_still_copy(
    tmp_path, monkeypatch, caplog):
  """pretrained.save waits for its write, so Orbax's copy of each numpy leaf (which guards an
  asynchronous save against later changes) would only double an import's memory."""
  params = mapping.to_params(_source(), MODEL)[0]
  config = config_lib.default_config()
  config.model.update(**SHAPE)
  # The checksums' chunks are temporaries as large as a leaf's bytes several times over (a
  # 16M-value chunk, however large the model): small chunks leave only Orbax's arrays to count.
  monkeypatch.setattr(checksums, "HOST_CHUNK", 1 << 12)
  pretrained.save(str(tmp_path / "first"), config, params)  # what one save sets up, once
  before = ocp.type_handlers.get_type_handler(np.ndarray)
  _, peak = _traced_peak(lambda: pretrained.save(str(tmp_path / "run"), config, params))
  assert peak < _bytes(params) // 4, (peak, _bytes(params))
  assert "overriding" not in caplog.text  # the handler swap is not reported to the user
  assert ocp.type_handlers.get_type_handler(np.ndarray) is before  # others' saves unchanged
  loaded = pretrained.load(str(tmp_path / "run"))
  for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(params), strict=True):
    assert np.array_equal(np.asarray(a), b)


def test_an_import_lets_go_of_the_source_s_arrays_before_it_writes_the_parameters(tmp_path,
                                                                                  monkeypatch):
  """A 16-bit GLM-10B's arrays are 20 GB that the save would otherwise run beside."""
  half = {key: value.to(torch.float16) for key, value in sources.random_weights().items()}
  og.save_hf(str(tmp_path / "hf"), half, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  read, held = convert.original.read, []

  def read_and_watch(*args, **kwargs):
    checkpoint = read(*args, **kwargs)
    held.extend(weakref.ref(array) for array in checkpoint.tensors.values())
    return checkpoint

  def save(*args, **kwargs):
    gc.collect()
    alive = sum(ref() is not None for ref in held)
    assert held and alive == 0, f"{alive} of the source's {len(held)} arrays are still held"
    return pretrained_save(*args, **kwargs)

  pretrained_save = pretrained.save
  monkeypatch.setattr(convert.original, "read", read_and_watch)
  monkeypatch.setattr(convert.pretrained, "save", save)
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  assert json.loads((tmp_path / "run" / convert.SOURCE_FILE).read_text())["dtypes"][
      "transformer.final_layernorm.weight"] == "float16"


def test_a_consuming_export_gives_the_same_tensors_and_empties_the_parameters():
  params = mapping.to_params(_source(), MODEL)[0]
  kept = jax.tree.map(np.copy, params)
  dtypes = {key: "float16" for key in mapping.expected_shapes(MODEL)}
  expected = mapping.from_params(kept, MODEL, dtypes)
  tensors = mapping.from_params(params, MODEL, dtypes, consume=True)
  assert jax.tree.leaves(params) == [] and len(jax.tree.leaves(kept)) > 0
  assert sorted(tensors) == sorted(expected)
  for key, value in tensors.items():
    assert value.dtype == np.float16 and np.array_equal(value, expected[key]), key


def test_parameters_moved_to_the_host_free_each_device_array_as_it_is_copied():
  """convert export held the parameters on the devices (host memory, on a CPU) and the host."""
  on_devices = {"layers": {"w": jax.numpy.arange(12.0).reshape(3, 4)}, "b": jax.numpy.ones(5)}
  leaves = jax.tree.leaves(on_devices)
  on_host = pretrained.params_to_host(on_devices)
  assert all(leaf.is_deleted() for leaf in leaves)
  assert isinstance(on_host["layers"], dict) and isinstance(on_host["layers"]["w"], np.ndarray)
  np.testing.assert_array_equal(on_host["layers"]["w"], np.arange(12.0).reshape(3, 4))


def test_an_export_reads_the_parameters_into_host_memory_checked_as_a_device_load_is(tmp_path,
                                                                                    monkeypatch):
  """convert export reads them as numpy arrays: no copy on the devices (host memory, on a CPU),
  and a damaged checkpoint is refused all the same."""
  from test_checkpoint_damage import _flip_bytes  # pylint: disable=import-outside-toplevel
  config = config_lib.default_config()
  config.model.update(**SHAPE)
  pretrained.save(str(tmp_path / "run"), config, mapping.to_params(_source(), MODEL)[0])
  checked, corruption = [], checksums.corruption
  monkeypatch.setattr(checksums, "corruption", lambda restored, saved: checked.extend(
      type(leaf) for leaf in jax.tree.leaves(restored)) or corruption(restored, saved))
  on_host = pretrained.load(str(tmp_path / "run"), attention="xla", on_host=True)
  assert checked and set(checked) == {np.ndarray}  # the host arrays' own checksums
  on_devices = pretrained.load(str(tmp_path / "run"), attention="xla")
  for a, b in zip(jax.tree.leaves(on_host.params), jax.tree.leaves(on_devices.params),
                  strict=True):
    assert type(a) is np.ndarray and np.array_equal(a, np.asarray(b))
  _flip_bytes(tmp_path / "run" / "checkpoints" / "0" / "state")
  # What sees the damage depends on what the flips hit (Orbax's layout varies from run to run):
  # a value fails its checksum, a compressed block's framing fails the read.
  with pytest.raises(checkpoint.UnusableCheckpointError,
                     match=r"--workdir: the parameters at step 0 .* (are corrupted|could not be "
                           r"read: cut off)"):
    pretrained.load(str(tmp_path / "run"), attention="xla", on_host=True)


def test_a_long_parameter_write_says_how_far_it_got_until_it_ends(tmp_path, monkeypatch, caplog):
  """convert import writes GLM-10B's 40 GB in minutes: a line every 30 s, not silence."""
  params = mapping.to_params(_source(), MODEL)[0]
  config = config_lib.default_config()
  config.model.update(**SHAPE)
  save = checkpoint.Checkpointer.save
  monkeypatch.setattr(checkpoint.Checkpointer, "save",  # a write that takes a while
                      lambda *args, **kwargs: time.sleep(0.6) or save(*args, **kwargs))
  with caplog.at_level(logging.INFO, logger="glmjax.pretrained"):
    pretrained.save(str(tmp_path / "run"), config, params, progress_every_s=0.1)
    said = [r.getMessage() for r in caplog.records if "Writing the parameters:" in r.getMessage()]
    time.sleep(0.3)
    after = [r.getMessage() for r in caplog.records if "Writing the parameters:" in r.getMessage()]
  assert len(said) >= 3 and after == said  # every 0.1 s while it wrote, then no more
  total = f"{_bytes(params) / 1e9:.2f} GB"
  assert all(re.fullmatch(rf"Writing the parameters: \d+\.\d\d of {total} after \d+ s", line)
             for line in said), said


def test_parameters_moved_to_the_host_are_plain_dicts_that_an_export_can_take_apart():
  """A frozen tree would keep its arrays: the consuming export pops each one as it is cast."""
  frozen = flax.core.freeze({"layers": {"w": jax.numpy.ones((2, 3))}, "b": jax.numpy.ones(3)})
  on_host = pretrained.params_to_host(frozen)
  assert isinstance(on_host, dict) and isinstance(on_host["layers"], dict)  # FrozenDict is not
  assert on_host["layers"].pop("w").shape == (2, 3)


def test_after_an_import_s_save_orbax_s_own_handler_overrides_are_reported_again(
    tmp_path, caplog):
  """The save hides the two overrides it makes itself, and only those."""
  params = {"w": np.ones((4, 4), np.float32)}
  config = config_lib.default_config()
  pretrained.save(str(tmp_path / "run"), config, params)
  handler = ocp.type_handlers.get_type_handler(np.ndarray)
  with caplog.at_level(logging.WARNING):
    ocp.type_handlers.register_type_handler(np.ndarray, handler, override=True)
  assert "Type handler registry type" in caplog.text


def test_a_tensor_without_a_source_dtype_is_exported_in_the_parameters_own_dtype():
  """A run with model.param_dtype=bfloat16 exports bfloat16, not a float32 twice its size."""
  model = ModelConfig(**SHAPE, param_dtype="bfloat16")
  params = mapping.to_params(_source(), model, consume=True)[0]
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {np.dtype(jax.numpy.bfloat16)}
  tensors = mapping.from_params(params, model, {"word_embeddings.weight": "float16"},
                                consume=True)
  assert tensors.pop("word_embeddings.weight").dtype == np.float16
  assert {value.dtype for value in tensors.values()} == {np.dtype(jax.numpy.bfloat16)}
