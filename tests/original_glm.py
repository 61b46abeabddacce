"""An independent PyTorch reference of the ORIGINAL GLM and writers for its checkpoint layouts.

Test helper only: it imports nothing from glmjax, and it was written from the original sources
below, not from glmjax/model, so that a converter test compares two independent readings.

Facts this module relies on, with where each was checked:

(a) Hugging Face config.json (hub files THUDM/glm-10b, glm-2b, glm-roberta-large,
    glm-large-chinese, glm-10b-chinese: `config.json`, transformers_version "4.23.1"). Keys:
    `num_layers`, `hidden_size`, `num_attention_heads`, `vocab_size`, `max_sequence_length`,
    `embedding_dropout_prob`, `attention_dropout_prob`, `output_dropout_prob` (all 0.1),
    `block_position_encoding` (true), `relative_encoding` (false), `attention_scale` (1.0),
    `initializer_range` (0.02), `checkpoint_activations`, `checkpoint_num_layers`,
    `output_predict` (true), `parallel_output`, `pool_token` ("cls"), `spell_func`, `spell_length`,
    `model_type` "glm", `architectures` ["GLMModel"], `auto_map`, `torch_dtype`. There is no
    layer-norm eps key (the hub GLMStack uses its default 1e-5), no FFN size (4H is hard-coded)
    and no activation key. Values as published:
      glm-10b            L=48 H=4096 heads=64 V=50304 max_sequence_length=1024
      glm-10b-chinese    L=48 H=4096 heads=64 V=50048 max_sequence_length=1024
      glm-2b             L=36 H=2048 heads=32 V=50304 max_sequence_length=1024
      glm-roberta-large  L=24 H=1024 heads=16 V=50304 max_sequence_length=512
      glm-large-chinese  L=24 H=1024 heads=16 V=50048 max_sequence_length=1024
    glm-large (English, BERT vocabulary) is L=24 H=1024 heads=16 V=30592, max position 512 per
    THUDM/GLM config/ds_block_large.sh and config_tasks/model_blocklm_large.sh; its hub
    config.json was not retrieved. GLM-Base (L=12 H=768 heads=12 V=30592, 512) has no hub
    repository: scripts/convert_glm_checkpoint_to_transformers.py only lists glm-large,
    glm-roberta-large, glm-large-chinese, glm-515m, glm-2b, glm-10b, glm-10b-chinese.
    Position tables: with block_position_encoding BOTH tables have `max_sequence_length + 1`
    rows (THUDM/GLM mpu/transformer.py GPT2ParallelTransformer.__init__; the hub modeling_glm.py
    GLMStack.__init__ is the same); without it a single `max_sequence_length`-row table. The
    Megatron `max_sequence_length` is `--max-position-embeddings` (THUDM/GLM train_utils.py
    get_model), and train_utils.load_pretrained checks `rows <= max_position_embeddings + 1`.
(b) State-dict keys. The Megatron `module` dict and the hub pytorch_model.bin have the same
    keys without prefix: THUDM/GLM scripts/convert_glm_checkpoint_to_transformers.py does
    `torch.save(checkpoint['module'], 'pytorch_model.bin')` (only glm-10b-chinese copies one
    word-embedding row). Hub GLMForConditionalGeneration holds `self.glm = GLMModel(config)`
    (base_model_prefix "glm"), so its save_pretrained writes `glm.`-prefixed keys, e.g.
    huggingface.co/law-llm/law-glm-10b pytorch_model.bin.index.json:
    {"metadata": {"total_size": N}, "weight_map": {"glm.transformer.layers.0...":
    "pytorch_model-00001-of-00004.bin", ...}}. Sharded safetensors use the same index format in
    `model.safetensors.index.json` with files `model-00001-of-0000N.safetensors` (transformers
    save_pretrained naming; it writes json with indent=2, sort_keys=True). The LM head is tied:
    logits = F.linear(h, word_embeddings.weight) (THUDM/GLM model/modeling_glm.py GLMModel.forward;
    hub GLMModel.forward), no separate head key.
(c) GeLU. Original Megatron code: tanh form `0.5x(1+tanh(0.7978845608028654 x (1+0.044715x^2)))`
    (THUDM/GLM mpu/transformer.py gelu_impl, used by ParallelMLP). Hub modeling_glm.py:
    `from transformers.activations import gelu` (seen in THUDM/glm-10b-chinese modeling_glm.py
    and copies of it), which is ACT2FN["gelu"] = GELUActivation = nn.functional.gelu, the exact
    erf form (huggingface/transformers src/transformers/activations.py). So the same weights run
    with tanh in Megatron and erf through the hub code. (The PaddleNLP port uses tanh.)
(d) Model-parallel split (THUDM/GLM mpu/layers.py, change_mp.py): files
    `mp_rank_{r:02d}_model_states.pt`, each a dict whose 'module' is that rank's state dict.
    VocabParallelEmbedding: rank r holds rows [r*V/p, (r+1)*V/p) (V must divide by p).
    ColumnParallelLinear splits the output dim (torch weight dim 0, and the bias);
    query_key_value is built with stride=3 and _initialize_affine_weight takes the H/p-row
    chunks `rank::world_size`, so rank r holds [Q_r | K_r | V_r] (change_mp.py re-merges with
    exactly that interleave, weight and bias). dense_h_to_4h: plain column split (weight rows and
    bias). RowParallelLinear (attention.dense, mlp.dense_4h_to_h) splits the input dim (torch
    weight dim 1); its bias is NOT split (added after the all-reduce): every rank holds it whole.
    Position tables (change_mp.py skips keys containing 'position') and LayerNorms are
    replicated. A released checkpoint directory is `<dir>/<iteration>/mp_rank_XX_model_states.pt`
    plus `<dir>/latest_checkpointed_iteration.txt` (or `latest`) holding the iteration
    (change_mp.py reads either).

Forward semantics (THUDM/GLM mpu/transformer.py, model/modeling_glm.py): h0 = E_word[tok] +
E_pos[pos] + E_block[block]; pre-LN layers x += dense(attn(LN1 x)); x += W2 gelu(W1 LN2 x);
fused QKV output split into contiguous thirds [Q|K|V], each reshaped (heads, d); scores
Q.K^T/sqrt(d); the mask from a per-row `sep`: query i sees key j iff j < sep or j <= i;
final LN; logits tied to the word embeddings. LayerNorm eps 1e-5.
"""
import json
import math
import os

import torch
import torch.nn.functional as F

_LAYER_PARAMS = ('input_layernorm', 'attention.query_key_value', 'attention.dense',
                 'post_attention_layernorm', 'mlp.dense_h_to_4h', 'mlp.dense_4h_to_h')


def random_state_dict(vocab_size, hidden_size, num_layers, num_heads, max_sequence_length, seed):
  """Random weights under the original key names (no prefix), float32, in Megatron's order.

  Every tensor is random, biases and LayerNorm parameters included, so a converter that drops,
  swaps or transposes any of them changes the logits. Scales keep activations O(1), so the two
  GeLU forms differ measurably."""
  assert hidden_size % num_heads == 0
  g = torch.Generator().manual_seed(seed)
  h, rows = hidden_size, max_sequence_length + 1  # +1: block_position_encoding tables, fact (a)

  def normal(shape, std, mean=0.0):
    return torch.randn(shape, generator=g, dtype=torch.float32) * std + mean

  sd = {
      'word_embeddings.weight': normal((vocab_size, h), 1.0),
      'transformer.position_embeddings.weight': normal((rows, h), 0.5),
      'transformer.block_position_embeddings.weight': normal((rows, h), 0.5),
  }
  for i in range(num_layers):
    p = f'transformer.layers.{i}.'
    sd[p + 'input_layernorm.weight'] = normal((h,), 0.2, 1.0)
    sd[p + 'input_layernorm.bias'] = normal((h,), 0.2)
    sd[p + 'attention.query_key_value.weight'] = normal((3 * h, h), 1 / math.sqrt(h))
    sd[p + 'attention.query_key_value.bias'] = normal((3 * h,), 0.2)
    sd[p + 'attention.dense.weight'] = normal((h, h), 1 / math.sqrt(h))
    sd[p + 'attention.dense.bias'] = normal((h,), 0.2)
    sd[p + 'post_attention_layernorm.weight'] = normal((h,), 0.2, 1.0)
    sd[p + 'post_attention_layernorm.bias'] = normal((h,), 0.2)
    sd[p + 'mlp.dense_h_to_4h.weight'] = normal((4 * h, h), 1 / math.sqrt(h))
    sd[p + 'mlp.dense_h_to_4h.bias'] = normal((4 * h,), 0.2)
    sd[p + 'mlp.dense_4h_to_h.weight'] = normal((h, 4 * h), 1 / math.sqrt(4 * h))
    sd[p + 'mlp.dense_4h_to_h.bias'] = normal((h,), 0.2)
  sd['transformer.final_layernorm.weight'] = normal((h,), 0.2, 1.0)
  sd['transformer.final_layernorm.bias'] = normal((h,), 0.2)
  return sd


def num_layers_of(state_dict):
  return 1 + max(int(k.split('.')[2]) for k in state_dict if k.startswith('transformer.layers.'))


def gelu(x, activation):
  if activation == 'erf':  # hub modeling_glm.py: transformers' GELUActivation, fact (c)
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
  if activation == 'tanh':  # THUDM/GLM mpu/transformer.py gelu_impl, constants as written there
    return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * x * (1.0 + 0.044715 * x * x)))
  raise ValueError(f'activation must be erf or tanh, got {activation!r}')


def glm_mask(batch, length, sep):
  """[B, T, T] bool, True where query i may attend key j: j < sep[b] (Part A) or j <= i."""
  sep = torch.as_tensor(sep, dtype=torch.long).reshape(-1).expand(batch)
  j = torch.arange(length)
  causal = j[None, :] <= j[:, None]
  return causal[None] | (j[None, None, :] < sep[:, None, None])


@torch.no_grad()
def forward(state_dict, tokens, position_ids, block_position_ids, sep, *, num_heads,
            activation='erf', eps=1e-5):
  """Float32 logits [B, T, V] of the original GLM. `sep`: an int or [B] (Part A lengths)."""
  sd = {k: v.float() for k, v in state_dict.items()}  # fp16 checkpoints are computed in fp32
  tokens, position_ids = torch.as_tensor(tokens), torch.as_tensor(position_ids)
  block_position_ids = torch.as_tensor(block_position_ids)
  b, t = tokens.shape
  word = sd['word_embeddings.weight']
  h = word.shape[1]
  d = h // num_heads
  rows = sd['transformer.position_embeddings.weight'].shape[0]
  # An out-of-range id would silently wrap in some frameworks; the original indexes a table.
  assert int(position_ids.max()) < rows and int(block_position_ids.max()) < rows
  x = (word[tokens] + sd['transformer.position_embeddings.weight'][position_ids]
       + sd['transformer.block_position_embeddings.weight'][block_position_ids])
  allowed = glm_mask(b, t, sep)[:, None]  # [B, 1, T, T], broadcast over heads

  def split_heads(y):  # [B, T, H] -> [B, heads, T, d]; head n owns columns n*d:(n+1)*d
    return y.reshape(b, t, num_heads, d).permute(0, 2, 1, 3)

  for i in range(num_layers_of(sd)):
    p = f'transformer.layers.{i}.'
    a = F.layer_norm(x, (h,), sd[p + 'input_layernorm.weight'], sd[p + 'input_layernorm.bias'],
                     eps)
    qkv = F.linear(a, sd[p + 'attention.query_key_value.weight'],
                   sd[p + 'attention.query_key_value.bias'])
    q, k, v = (split_heads(z) for z in qkv.split(h, dim=-1))  # contiguous thirds [Q|K|V]
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)
    # The original adds -10000 where masked; exp of that underflows to 0 in fp32 just as -inf.
    scores = scores.masked_fill(~allowed, float('-inf'))
    ctx = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).reshape(b, t, h)
    x = x + F.linear(ctx, sd[p + 'attention.dense.weight'], sd[p + 'attention.dense.bias'])
    m = F.layer_norm(x, (h,), sd[p + 'post_attention_layernorm.weight'],
                     sd[p + 'post_attention_layernorm.bias'], eps)
    m = gelu(F.linear(m, sd[p + 'mlp.dense_h_to_4h.weight'], sd[p + 'mlp.dense_h_to_4h.bias']),
             activation)
    x = x + F.linear(m, sd[p + 'mlp.dense_4h_to_h.weight'], sd[p + 'mlp.dense_4h_to_h.bias'])
  x = F.layer_norm(x, (h,), sd['transformer.final_layernorm.weight'],
                   sd['transformer.final_layernorm.bias'], eps)
  return F.linear(x, word)


def hf_config(vocab_size, hidden_size, num_layers, num_heads, max_sequence_length, *,
              architecture='GLMModel'):
  """config.json as the THUDM hub repositories have it (glm-10b's file with these dims)."""
  return {
      '_name_or_path': 'glmjax-tests/glm-tiny',
      'architectures': [architecture],
      'attention_dropout_prob': 0.1,
      'attention_scale': 1.0,
      'auto_map': {
          'AutoConfig': 'configuration_glm.GLMConfig',
          'AutoModel': 'modeling_glm.GLMModel',
          'AutoModelForSeq2SeqLM': 'modeling_glm.GLMForConditionalGeneration',
          'AutoModelForMultipleChoice': 'modeling_glm.GLMForMultipleChoice',
      },
      'block_position_encoding': True,
      'checkpoint_activations': False,
      'checkpoint_num_layers': 1,
      'embedding_dropout_prob': 0.1,
      'hidden_size': hidden_size,
      'initializer_range': 0.02,
      'max_sequence_length': max_sequence_length,
      'model_type': 'glm',
      'num_attention_heads': num_heads,
      'num_layers': num_layers,
      'output_dropout_prob': 0.1,
      'output_predict': True,
      'parallel_output': True,
      'pool_token': 'cls',
      'relative_encoding': False,
      'spell_func': 'lstm',
      'spell_length': None,
      'torch_dtype': 'float32',
      'transformers_version': '4.23.1',
      'vocab_size': vocab_size,
  }


def _write_json(path, obj):
  with open(path, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True)  # transformers writes both files this way
    f.write('\n')


def save_hf(directory, state_dict, config, *, prefix, fmt, shards=1):
  """A Hugging Face GLM directory: config.json plus weights, optionally sharded with an index.

  prefix=True writes `glm.`-prefixed keys (GLMForConditionalGeneration.save_pretrained);
  prefix=False the hub's pytorch_model.bin keys. Returns the list of weight files written."""
  assert fmt in ('safetensors', 'bin') and shards >= 1
  os.makedirs(directory, exist_ok=True)
  _write_json(os.path.join(directory, 'config.json'), config)
  # Own contiguous copies: safetensors refuses shared or strided storage, and torch.save of a
  # view would store its whole base tensor.
  tensors = {('glm.' if prefix else '') + k: v.detach().contiguous().clone()
             for k, v in state_dict.items()}
  keys = list(tensors)
  assert len(keys) >= shards, 'more shards than tensors'
  if fmt == 'safetensors':
    from safetensors.torch import save_file
    single, pattern, index_name = 'model.safetensors', 'model-{:05d}-of-{:05d}.safetensors', \
        'model.safetensors.index.json'
    write = lambda part, path: save_file(part, path, metadata={'format': 'pt'})
  else:
    single, pattern, index_name = 'pytorch_model.bin', 'pytorch_model-{:05d}-of-{:05d}.bin', \
        'pytorch_model.bin.index.json'
    write = lambda part, path: torch.save(part, path)
  if shards == 1:
    write(tensors, os.path.join(directory, single))
    return [single]
  # Contiguous runs of keys, as save_pretrained fills shards in order; a layer's tensors may
  # straddle two files, which is what the index is for.
  bounds = [round(i * len(keys) / shards) for i in range(shards + 1)]
  weight_map, files = {}, []
  for s in range(shards):
    name = pattern.format(s + 1, shards)
    part = {k: tensors[k] for k in keys[bounds[s]:bounds[s + 1]]}
    write(part, os.path.join(directory, name))
    weight_map.update({k: name for k in part})
    files.append(name)
  total = sum(v.numel() * v.element_size() for v in tensors.values())
  _write_json(os.path.join(directory, index_name),
              {'metadata': {'total_size': total}, 'weight_map': weight_map})
  return files


def megatron_partition(key, tensor, rank, parts):
  """Rank `rank`'s slice of one full tensor, as THUDM/GLM mpu/layers.py lays it out (fact (d))."""
  if parts == 1:
    return tensor
  if key == 'word_embeddings.weight':  # VocabParallelEmbedding: contiguous vocabulary rows
    n = tensor.shape[0]
    assert n % parts == 0, 'the original requires vocab_size divisible by the model-parallel size'
    return tensor[rank * n // parts:(rank + 1) * n // parts]
  if key.endswith('attention.query_key_value.weight') or key.endswith(
      'attention.query_key_value.bias'):
    # ColumnParallelLinear(stride=3): chunks of H/p rows, rank takes chunks rank::parts,
    # i.e. its rows of Q, then of K, then of V.
    assert tensor.shape[0] % (3 * parts) == 0
    chunk = tensor.shape[0] // (3 * parts)
    return torch.cat([tensor[(s * parts + rank) * chunk:(s * parts + rank + 1) * chunk]
                      for s in range(3)])
  if key.endswith('mlp.dense_h_to_4h.weight') or key.endswith('mlp.dense_h_to_4h.bias'):
    n = tensor.shape[0]  # ColumnParallelLinear, stride 1: output rows and bias
    assert n % parts == 0
    return tensor[rank * n // parts:(rank + 1) * n // parts]
  if key.endswith('attention.dense.weight') or key.endswith('mlp.dense_4h_to_h.weight'):
    n = tensor.shape[1]  # RowParallelLinear: the input dim; the bias stays whole on every rank
    assert n % parts == 0
    return tensor[:, rank * n // parts:(rank + 1) * n // parts]
  return tensor  # position tables, LayerNorms, RowParallel biases: replicated


def save_megatron(directory, state_dict, *, parts=1, iteration=None):
  """mp_rank_XX_model_states.pt files, each {'module': that rank's part, ...}.

  With `iteration`, the released-checkpoint layout: `<directory>/<iteration>/mp_rank_...` and
  `<directory>/latest_checkpointed_iteration.txt`. The extra top-level keys mimic what a
  DeepSpeed save holds besides 'module', so a reader must pick 'module'. Returns the file paths."""
  target = directory if iteration is None else os.path.join(directory, str(iteration))
  os.makedirs(target, exist_ok=True)
  if iteration is not None:
    with open(os.path.join(directory, 'latest_checkpointed_iteration.txt'), 'w') as f:
      f.write(f'{iteration}\n')
  paths = []
  for rank in range(parts):
    module = {k: megatron_partition(k, v.detach(), rank, parts).contiguous().clone()
              for k, v in state_dict.items()}
    path = os.path.join(target, f'mp_rank_{rank:02d}_model_states.pt')
    torch.save({'module': module, 'mp_world_size': parts, 'dp_world_size': 1,
                'iteration': iteration or 0, 'global_steps': iteration or 0,
                'skipped_steps': 0, 'optimizer': None, 'lr_scheduler': None}, path)
    paths.append(path)
  return paths
