"""Planted bugs in the model's speed levers that passed the suite (session 39's speed-lever
hunt): values stay the same, the work grows. The Part B loss loops over every chunk of the
batch, the xla attention multiplies float32 copies, splash_dynamic's output is kept twice under
remat, the mask is rebuilt in every layer, a zero dropout rate still draws masks, scanned remat
layers get an optimisation barrier, cuDNN's Part A call computes every row, and a scanned stack
runs without remat."""
from mutation_entries import Mutation

_GLM = "glmjax/model/glm.py"
_DENSE = "glmjax/model/dense.py"
_REMAT_TESTS = "tests/test_remat_and_scan.py::"
_BF16_ATTENTION = ("tests/test_dense_attention.py::test_the_xla_attention_s_matmuls_read_"
                   "bfloat16_operands_forward_and_backward",)

ENTRIES = (
    Mutation("the Part B loss loops over every chunk of the batch instead of the scored ones",
             "glmjax/loss.py", "carry = jax.lax.fori_loop(0, num_chunks, body, carry)",
             "carry = jax.lax.fori_loop(0, padded // chunk, body, carry)",
             ("tests/test_loss.py::test_the_loss_loop_runs_once_per_chunk_of_scored_positions_"
              "not_per_chunk_of_the_batch",)),
    Mutation("the xla attention multiplies float32 probabilities by v in a bfloat16 model",
             _DENSE, 'jnp.einsum("bnqk,bknd->bqnd", probs.astype(v.dtype), v).astype(q.dtype)',
             'jnp.einsum("bnqk,bknd->bqnd", probs, v).astype(q.dtype)', _BF16_ATTENTION),
    Mutation("the xla attention scores float32 copies of q and k in a bfloat16 model", _DENSE,
             "logits = _scores(q, k) * scale",
             'logits = jnp.einsum("bqnd,bknd->bnqk", q.astype(jnp.float32), '
             'k.astype(jnp.float32)) * scale', _BF16_ATTENTION),
    Mutation("the xla attention's backward multiplies a float32 score gradient by q and k",
             _DENSE, "  d_scores = d_scores.astype(q.dtype)\n", "", _BF16_ATTENTION + (
                 "tests/test_dense_attention.py::test_the_xla_attention_s_bfloat16_gradients_"
                 "are_the_float32_ones_within_bfloat16_rounding",)),
    Mutation("the xla attention's backward gives dq for dk and dk for dq", _DENSE,
             "  return d_q.astype(q.dtype), d_k.astype(k.dtype)",
             "  return d_k.astype(q.dtype), d_q.astype(k.dtype)",
             ("tests/test_dense_attention.py::test_the_gradients_of_masked_attention_use_the_"
              "scale_it_is_given[xla]",
              "tests/test_dense_attention.py::test_the_xla_attention_s_bfloat16_gradients_"
              "are_the_float32_ones_within_bfloat16_rounding")),
    Mutation("splash_dynamic loses its named-residuals flag so remat minimal keeps its output "
             "twice", "glmjax/model/model_config.py",
             '"splash_dynamic": Kernel(seq_len_multiple=128, named_residuals=True, tpu=True, '
             'mosaic=True),',
             '"splash_dynamic": Kernel(seq_len_multiple=128, tpu=True, mosaic=True),',
             (_REMAT_TESTS + "test_remat_minimal_keeps_a_fused_kernels_output_once_and_its_"
              "softmax_statistics",)),
    Mutation("the attention mask is rebuilt inside every layer instead of once per batch", _GLM,
             "      context = attention_lib.masked_attention(\n          q, k, v, mask, "
             "implementation",
             "      context = attention_lib.glm_attention(\n          q, k, v, mask.sep, "
             "implementation",
             (_REMAT_TESTS + "test_the_attention_mask_is_built_once_per_batch_not_once_per_"
              "layer",)),
    Mutation("hidden dropout at rate 0 still draws a mask in training", _GLM,
             "    if self.rate == 0.0 or self.deterministic:\n      return inputs",
             "    if self.deterministic:\n      return inputs",
             ("tests/test_dropout_masks.py::test_a_zero_dropout_rate_draws_no_mask_in_training",)),
    Mutation("scanned remat layers get prevent_cse and its optimization barrier", _GLM,
             "prevent_cse=not cfg.scan_layers)", "prevent_cse=True)",
             (_REMAT_TESTS + "test_only_unscanned_remat_layers_put_an_optimization_barrier_in_"
              "the_gradient",)),
    Mutation("the cuDNN Part A call gets no query lengths so it computes every row",
             "glmjax/model/gpu_kernels.py",
             "q, k, v, scale=scale, query_seq_lengths=lengths, key_value_seq_lengths=lengths,",
             "q, k, v, scale=scale, key_value_seq_lengths=lengths,",
             ("tests/test_gpu_kernels.py::test_the_cudnn_part_a_call_computes_only_the_part_a_"
              "rows",)),
    Mutation("a scanned layer stack runs without remat whatever the policy", _GLM,
             '  if cfg.remat == "none":\n    return Block',
             '  if cfg.remat == "none" or cfg.scan_layers:\n    return Block',
             (_REMAT_TESTS + "test_a_scanned_layer_stack_keeps_each_layernorm_s_mean_and_"
              "deviation",)),
)
