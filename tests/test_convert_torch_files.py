"""Files that torch.load reads (a hub's pytorch_model.bin, Megatron's mp_rank_XX_model_states.pt):
entries that are not tensors."""
import json
import os

import numpy as np
import pytest
import torch

import convert_sources as sources
import original_glm as og
from convert_sources import H, HEADS, L, MSL, V
from glmjax import convert

MEGATRON_FILE = "mp_rank_00_model_states.pt"


@pytest.fixture(scope="module")
def weights():
  return sources.random_weights()


def _hub_bin(folder, state):
  """A hub folder whose pytorch_model.bin holds `state` as torch.save writes it."""
  os.makedirs(folder, exist_ok=True)
  (folder / "config.json").write_text(json.dumps(og.hf_config(V, H, L, HEADS, MSL)))
  torch.save(state, folder / "pytorch_model.bin")


@pytest.mark.parametrize("layout", ["hf-bin", "megatron"])
def test_an_entry_that_is_not_a_tensor_is_refused_in_one_line_naming_it_and_its_file(
    weights, tmp_path, layout):
  state = dict(weights, _meta=np.random.get_state())  # a tuple: no array to import
  if layout == "megatron":
    torch.save({"module": state}, tmp_path / MEGATRON_FILE)
    path = tmp_path / MEGATRON_FILE
  else:
    _hub_bin(tmp_path, state)
    path = tmp_path / "pytorch_model.bin"
  with pytest.raises(ValueError) as raised:
    convert.load_pretrained(str(tmp_path), allow_pickle=True)
  message = str(raised.value)
  assert message.startswith(f"{path}: the entry _meta is a tuple, not a tensor")
  assert "\n" not in message
