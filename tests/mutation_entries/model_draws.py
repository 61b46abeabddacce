"""Planted bugs in how the model's random draws are shaped that passed the suite (session 37's
model hunt): dropout of the residual sum, masks shared over heads or positions, query, key and
value drawn as copies, a position table's std fixed; and top_p summing in vocabulary order."""
from mutation_entries import Mutation

_GLM = "glmjax/model/glm.py"
_DRAWS = "tests/test_model_draws.py::"
_RESIDUAL = (_DRAWS + "test_hidden_dropout_drops_the_residual_branches_never_the_residual_stream",)

ENTRIES = (
    Mutation("hidden dropout drops the MLP's residual sum, not its branch", _GLM,
             "x = residual + drop_mlp(Mlp(cfg, name=\"mlp\")(normed))",
             "x = drop_mlp(residual + Mlp(cfg, name=\"mlp\")(normed))", _RESIDUAL),
    Mutation("hidden dropout drops the attention's residual sum, not its branch", _GLM,
             "    attended = drop_attention(attention(normed, mask, position_ids, "
             "block_position_ids))\n    residual = normed * cfg.deepnorm_alpha if cfg.norm == "
             "\"deepnorm\" else x\n    x = residual + attended\n",
             "    attended = attention(normed, mask, position_ids, block_position_ids)\n"
             "    residual = normed * cfg.deepnorm_alpha if cfg.norm == \"deepnorm\" else x\n"
             "    x = drop_attention(residual + attended)\n", _RESIDUAL),
    Mutation("attention dropout draws one mask for every head", "glmjax/model/dense.py",
             "keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)",
             "keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, "
             "(probs.shape[0], 1, *probs.shape[2:]))",
             ("tests/test_attention.py::test_attention_dropout_draws_its_own_mask_for_each_head_"
              "and_each_row",)),
    Mutation("embedding dropout drops the same features at every position", _GLM,
             "x = nn.Dropout(cfg.hidden_dropout, deterministic=deterministic)(x)",
             "x = nn.Dropout(cfg.hidden_dropout, broadcast_dims=(1,), "
             "deterministic=deterministic)(x)",
             (_DRAWS + "test_embedding_dropout_draws_a_mask_for_every_position_of_every_row",)),
    Mutation("the fused QKV kernel is drawn once for its three slots (queries equal keys)", _GLM,
             "return (jax.random.normal(key, shape, jnp.float32) * stds).astype(dtype)",
             "return (jax.random.normal(key, (shape[0], 1, *shape[2:]), jnp.float32) "
             "* stds).astype(dtype)",
             (_DRAWS + "test_the_fused_kernel_s_queries_keys_and_values_start_as_independent_"
              "draws",)),
    Mutation("the position table is drawn at std 0.02 whatever model.init_std says", _GLM,
             "position_table = _param(self, \"position_embeddings\", _normal(cfg.init_std),",
             "position_table = _param(self, \"position_embeddings\", _normal(0.02),",
             ("tests/test_model.py::test_initial_weights_have_glm_s_scaled_stds[pre]",)),
    Mutation("top_p sums the probability mass in vocabulary order", "glmjax/decoding.py",
             "cumulative = jnp.cumsum(jax.nn.softmax(ordered, axis=-1), axis=-1)",
             "cumulative = jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1)",
             ("tests/test_prompts_and_sampling.py::test_top_p_samples_from_the_likeliest_tokens_"
              "until_those_before_one_pass_p",)),
)
