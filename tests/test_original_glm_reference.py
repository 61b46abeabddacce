"""Tests of the independent original-GLM reference (tests/original_glm.py) itself.

The converter tests trust this reference, so its forward, its checkpoint writers and its
model-parallel split are each checked here against a second, separately written reading."""
import json
import os

import numpy as np
import pytest

import torch  # noqa: E402 - requirements-dev.txt installs the CPU build; never skipped

import original_glm as og  # noqa: E402

V, H, L, HEADS, MSL = 200, 32, 2, 4, 16  # V not a multiple of 128, as a mapping bug would hide
B, T = 2, 12
SEP = torch.tensor([5, 8])


@pytest.fixture(scope='module', autouse=True)
def _one_torch_thread():
  # The shapes are tiny: a thread pool over shared cores costs more than it computes.
  before = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(before)


@pytest.fixture(scope='module')
def sd():
  return og.random_state_dict(V, H, L, HEADS, MSL, seed=0)


def _inputs(seed=1):
  g = torch.Generator().manual_seed(seed)
  tokens = torch.randint(0, V, (B, T), generator=g)
  # Every id up to MSL itself: the tables have MSL + 1 rows and the last one must be reachable.
  pos = torch.randint(0, MSL + 1, (B, T), generator=g)
  block = torch.randint(0, MSL + 1, (B, T), generator=g)
  pos[0, -1], block[1, -1] = MSL, MSL
  return tokens, pos, block


def _close(got, want, atol, rtol=0.0):
  # numpy's check, not torch.testing.assert_close: the latter's first call imports for seconds.
  np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=rtol, atol=atol)


def _logits(sd, tokens, pos, block, activation='erf'):
  return og.forward(sd, tokens, pos, block, SEP, num_heads=HEADS, activation=activation)


def test_state_dict_keys_shapes_and_values(sd):
  assert sd['word_embeddings.weight'].shape == (V, H)
  for name in ('position_embeddings', 'block_position_embeddings'):
    assert sd[f'transformer.{name}.weight'].shape == (MSL + 1, H)
  assert sd['transformer.layers.1.attention.query_key_value.weight'].shape == (3 * H, H)
  assert sd['transformer.layers.1.mlp.dense_4h_to_h.weight'].shape == (H, 4 * H)
  assert len(sd) == 3 + 12 * L + 2 and og.num_layers_of(sd) == L
  for k, v in sd.items():
    assert v.dtype == torch.float32
    # Biases and LayerNorm parameters are random too: a converter that drops one shows.
    centred = v - 1.0 if k.endswith('layernorm.weight') else v
    assert centred.std() > 0.05 and centred.abs().min() < centred.abs().max(), k
  again = og.random_state_dict(V, H, L, HEADS, MSL, seed=0)
  other = og.random_state_dict(V, H, L, HEADS, MSL, seed=1)
  assert all(torch.equal(sd[k], again[k]) for k in sd)
  assert not torch.equal(sd['transformer.final_layernorm.bias'],
                         other['transformer.final_layernorm.bias'])


def test_forward_matches_torch_transformer_encoder_layers(sd):
  """A second implementation built from torch.nn: PyTorch's MultiheadAttention packs in_proj as
  contiguous [Q|K|V] with heads as contiguous column blocks, the original GLM's layout."""
  tokens, pos, block = _inputs()
  layers = []
  for i in range(L):
    p = f'transformer.layers.{i}.'
    layer = torch.nn.TransformerEncoderLayer(H, HEADS, 4 * H, dropout=0.0, activation='gelu',
                                             layer_norm_eps=1e-5, batch_first=True,
                                             norm_first=True).eval()
    with torch.no_grad():
      for ours, theirs in (('attention.query_key_value', 'self_attn.in_proj'),
                           ('attention.dense', 'self_attn.out_proj'),
                           ('mlp.dense_h_to_4h', 'linear1'), ('mlp.dense_4h_to_h', 'linear2'),
                           ('input_layernorm', 'norm1'), ('post_attention_layernorm', 'norm2')):
        for kind in ('weight', 'bias'):
          name = theirs + ('_' if theirs.endswith('in_proj') else '.') + kind
          layer.get_parameter(name).copy_(sd[p + ours + '.' + kind])
    layers.append(layer)
  # torch's boolean mask is True where attention is NOT allowed; one [T, T] per (batch, head),
  # spelled out here rather than taken from og.glm_mask, so that a wrong mask there shows.
  blocked = torch.tensor([[[not (j < SEP[b] or j <= i) for j in range(T)] for i in range(T)]
                          for b in range(B)]).repeat_interleave(HEADS, dim=0)
  with torch.no_grad():
    x = (sd['word_embeddings.weight'][tokens] + sd['transformer.position_embeddings.weight'][pos]
         + sd['transformer.block_position_embeddings.weight'][block])
    for layer in layers:
      x = layer(x, src_mask=blocked)
    x = torch.nn.functional.layer_norm(x, (H,), sd['transformer.final_layernorm.weight'],
                                       sd['transformer.final_layernorm.bias'], 1e-5)
    expected = x @ sd['word_embeddings.weight'].T
  got = _logits(sd, tokens, pos, block)
  assert got.shape == (B, T, V) and got.dtype == torch.float32
  _close(got, expected, atol=1e-4, rtol=1e-4)


def test_mask_part_a_bidirectional_part_b_causal_per_row(sd):
  tokens, pos, block = _inputs()
  base = _logits(sd, tokens, pos, block)

  def changed_at(j):
    t = tokens.clone()
    t[:, j] = (t[:, j] + 1) % V
    return _logits(sd, t, pos, block)

  def differs(a, b):
    return (a - b).abs().max().item() > 1e-3

  # j = 9 is Part B in both rows (sep 5 and 8): nothing before it may see it.
  after = changed_at(9)
  _close(after[:, :9], base[:, :9], atol=1e-6)
  assert differs(after[:, 9], base[:, 9]) and differs(after[:, 11], base[:, 11])
  # j = 3 is Part A in both rows: the very first position sees it.
  assert differs(changed_at(3)[:, 0], base[:, 0])
  # j = sep is the first Part B key; j = sep - 1 the last Part A one. The sep is per row:
  # j = 5 is Part B in row 0 (sep 5) but Part A in row 1 (sep 8).
  after = changed_at(5)
  _close(after[0, :5], base[0, :5], atol=1e-6)
  assert differs(after[0, 5], base[0, 5]) and differs(after[1, 0], base[1, 0])
  after = changed_at(8)
  _close(after[1, :8], base[1, :8], atol=1e-6)
  assert differs(changed_at(4)[0, 0], base[0, 0]) and differs(changed_at(7)[1, 0], base[1, 0])


def test_erf_and_tanh_gelu_differ_slightly(sd):
  tokens, pos, block = _inputs()
  erf, tanh = _logits(sd, tokens, pos, block, 'erf'), _logits(sd, tokens, pos, block, 'tanh')
  gap = (erf - tanh).abs().max().item()
  assert 1e-5 < gap < 0.05 * erf.abs().max().item()
  x = torch.linspace(-4, 4, 81)
  _close(og.gelu(x, 'erf'), torch.nn.functional.gelu(x), atol=1e-6)
  _close(og.gelu(x, 'tanh'), torch.nn.functional.gelu(x, approximate='tanh'), atol=1e-6)
  with pytest.raises(ValueError):
    og.gelu(x, 'relu')


def test_position_ids_beyond_the_table_are_refused(sd):
  tokens, pos, block = _inputs()
  pos[0, 0] = MSL + 1
  with pytest.raises(AssertionError):
    _logits(sd, tokens, pos, block)


def _merge_like_change_mp(modules):
  """Independent re-merge, written from THUDM/GLM change_mp.py's 'Decrease MP size' branch."""
  merged = dict(modules[0])
  for part in modules[1:]:
    for k, v in part.items():
      if v.dim() == 2 and 'position' not in k:
        if 'query' in k:
          a, b = merged[k].shape[0] // 3, v.shape[0] // 3
          t = merged[k]
          merged[k] = torch.cat([t[:a], v[:b], t[a:2 * a], v[b:2 * b], t[2 * a:], v[2 * b:]])
        elif 'word' in k or 'h_to_4h' in k:
          merged[k] = torch.cat([merged[k], v], 0)
        else:
          merged[k] = torch.cat([merged[k], v], 1)
      elif v.dim() == 1 and 'query_key_value' in k:
        a, b = merged[k].shape[0] // 3, v.shape[0] // 3
        t = merged[k]
        merged[k] = torch.cat([t[:a], v[:b], t[a:2 * a], v[b:2 * b], t[2 * a:], v[2 * b:]])
      elif v.dim() == 1 and 'dense_h_to_4h' in k:
        merged[k] = torch.cat([merged[k], v], 0)
      else:
        assert torch.equal(merged[k], v), f'{k} should be replicated'
  return merged


@pytest.mark.parametrize('parts', [1, 2, 4])
def test_megatron_parts_merge_back_exactly(sd, tmp_path, parts):
  paths = og.save_megatron(str(tmp_path), sd, parts=parts)
  assert [os.path.basename(p) for p in paths] == [
      f'mp_rank_{r:02d}_model_states.pt' for r in range(parts)]
  loaded = [torch.load(p, map_location='cpu', weights_only=True) for p in paths]
  assert all(d['mp_world_size'] == parts and set(d['module']) == set(sd) for d in loaded)
  modules = [d['module'] for d in loaded]
  q = 'transformer.layers.0.attention.query_key_value.'
  for m in modules:
    assert m['word_embeddings.weight'].shape == (V // parts, H)
    assert m[q + 'weight'].shape == (3 * H // parts, H)
    assert m['transformer.layers.0.attention.dense.weight'].shape == (H, H // parts)
    assert m['transformer.layers.0.attention.dense.bias'].shape == (H,)
    assert m['transformer.layers.0.mlp.dense_h_to_4h.bias'].shape == (4 * H // parts,)
    assert m['transformer.layers.0.mlp.dense_4h_to_h.weight'].shape == (H, 4 * H // parts)
  # The stride-3 layout from its definition: the last rank holds the last H/p rows of Q, K, V.
  w, n, last = sd[q + 'bias'], H // parts, modules[-1][q + 'bias']
  assert torch.equal(last, torch.cat([w[H - n:H], w[2 * H - n:2 * H], w[3 * H - n:]]))
  merged = _merge_like_change_mp(modules)
  assert set(merged) == set(sd)
  for k in sd:
    assert torch.equal(merged[k], sd[k]), k


def test_megatron_release_files_sit_under_the_iteration_folder(sd, tmp_path):
  paths = og.save_megatron(str(tmp_path), sd, parts=2, iteration=250000)
  assert (tmp_path / 'latest_checkpointed_iteration.txt').read_text().strip() == '250000'
  assert all(os.path.dirname(p) == str(tmp_path / '250000') for p in paths)


@pytest.mark.parametrize('fmt', ['safetensors', 'bin'])
@pytest.mark.parametrize('prefix', [False, True])
@pytest.mark.parametrize('shards', [1, 3])
def test_hf_writer_files_read_back_to_the_same_weights(sd, tmp_path, fmt, prefix, shards):
  from safetensors.torch import load_file
  config = og.hf_config(V, H, L, HEADS, MSL)
  files = og.save_hf(str(tmp_path), sd, config, prefix=prefix, fmt=fmt, shards=shards)
  assert json.loads((tmp_path / 'config.json').read_text()) == config
  stem, ext = ('model', 'safetensors') if fmt == 'safetensors' else ('pytorch_model', 'bin')
  if shards == 1:
    assert files == [f'{stem}.{ext}']
    assert not list(tmp_path.glob('*.index.json'))
  else:
    assert files == [f'{stem}-{i:05d}-of-{shards:05d}.{ext}' for i in range(1, shards + 1)]
    index = json.loads((tmp_path / f'{stem}.{ext}.index.json').read_text())
    assert set(index['weight_map'].values()) == set(files)
    assert index['metadata']['total_size'] == sum(v.numel() * 4 for v in sd.values())
  read = (lambda f: load_file(str(tmp_path / f))) if fmt == 'safetensors' else (
      lambda f: torch.load(tmp_path / f, map_location='cpu', weights_only=True))
  loaded = {}
  for f in files:
    part = read(f)
    if shards > 1:
      assert all(index['weight_map'][k] == f for k in part)
    assert not set(part) & set(loaded)
    loaded.update(part)
  want = {('glm.' if prefix else '') + k: v for k, v in sd.items()}
  assert set(loaded) == set(want)
  assert all(torch.equal(loaded[k], want[k]) for k in want)
