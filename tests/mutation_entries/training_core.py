"""Planted bugs in training_core (mutation hunt of session 13)."""
from mutation_entries import Mutation  # noqa: F401  (the entries below use it)

_LOSS = "tests/test_loss.py::"
_PREFETCH = "tests/test_prefetch.py::"
_SEMANTICS = "tests/test_model_semantics.py::"
# GLM's embedding block (glm.py): word lookup, learned 2-D positions added, then the dropout.
_WORDS = "    x = nn.with_logical_constraint(x, EMBED_AXES[:2] + (None,))\n"  # the lookup's end
_POSITIONS = (
    "    if cfg.position_tables:\n"
    "      table_shape = (cfg.max_position + 1, cfg.hidden_size)\n"
    '      position_table = _param(self, "position_embeddings", _normal(cfg.init_std),\n'
    '                              ("position", "embed"), table_shape, weights_dtype)\n'
    '      block_table = _param(self, "block_position_embeddings", '
    '_normal(cfg.init_std),\n'
    '                           ("position", "embed"), table_shape, weights_dtype)\n'
    "      x = x + positions.learned_2d_embeddings(\n"
    '          _gathered_over_embed(position_table, "position"),\n'
    '          _gathered_over_embed(block_table, "position"), position_ids,\n'
    "          block_position_ids).astype(dtype)\n"
    "    x = nn.with_logical_constraint(x, EMBED_AXES)\n")
_EMBEDDING_DROPOUT = "    x = nn.Dropout(cfg.hidden_dropout, deterministic=deterministic)(x)\n"
_SCALED = _LOSS + "test_the_gradient_of_a_scaled_loss_is_scaled_as_the_loss_is"

ENTRIES = (
    Mutation("Part B loss pads its last chunk with position 0 at that position's weight",
             "glmjax/loss.py", "w = jnp.where(valid, flat_weights[positions], 0.0)",
             "w = flat_weights[positions]",
             (_LOSS + "test_a_loss_on_every_position_the_first_included_counts_each_position_"
              "once",)),
    Mutation("Part B loss's backward ignores the cotangent (hidden states)", "glmjax/loss.py",
             "return ((g * d_hidden.astype(jnp.float32)).astype(d_hidden.dtype),",
             "return ((d_hidden.astype(jnp.float32)).astype(d_hidden.dtype),", (_SCALED,)),
    Mutation("Part B loss's backward ignores the cotangent (embeddings)", "glmjax/loss.py",
             "(g * d_embeddings.astype(jnp.float32)).astype(d_embeddings.dtype),",
             "(d_embeddings.astype(jnp.float32)).astype(d_embeddings.dtype),", (_SCALED,)),
    Mutation("Part B loss keeps a chunk longer than the batch (computes a chunk of padding)",
             "glmjax/loss.py", "  chunk = min(chunk, total)\n", "",
             (_LOSS + "test_a_chunk_longer_than_the_batch_computes_no_more_positions_than_the_"
              "batch_has",)),
    Mutation("Part B loss's logit_positions count one data-parallel device's rows only",
             "glmjax/loss.py",
             "logit_positions = over_rows((num_chunks * chunk).astype(jnp.float32))",
             "logit_positions = (num_chunks * chunk).astype(jnp.float32)",
             (_LOSS + "test_under_a_mesh_the_logit_positions_count_those_of_every_data_"
              "parallel_device",)),
    Mutation("Part B loss's gradient uses 0/1 weights, not the weights themselves",
             "glmjax/loss.py", "d_logits = jnp.exp(logits - log_z[:, None]) * w[:, None]",
             "d_logits = jnp.exp(logits - log_z[:, None]) * (w != 0)[:, None]",
             (_LOSS + "test_fractional_weights_scale_each_position_s_loss_and_gradient",)),
    Mutation("Part B loss hands the weights a gradient", "glmjax/loss.py",
             "None, jnp.zeros_like(weights))", "None, weights)",
             (_LOSS + "test_the_weights_receive_no_gradient",)),
    Mutation("tied logits of bfloat16 hidden states rounded to bfloat16", "glmjax/model/glm.py",
             'logits = jnp.einsum("bth,vh->btv", hidden, embeddings.astype(hidden.dtype),\n'
             "                      preferred_element_type=jnp.float32)",
             'logits = jnp.einsum("bth,vh->btv", hidden, '
             "embeddings.astype(hidden.dtype)).astype(jnp.float32)",
             (_LOSS + "test_tied_logits_of_bfloat16_hidden_states_are_accumulated_and_returned_"
              "in_float32",)),
    Mutation("a prefetch depth of 0 accepted (an unbounded queue)", "glmjax/prefetch.py",
             "if depth < 1:", "if depth < 0:", (_PREFETCH + "test_a_depth_below_one_is_refused",)),
    Mutation("the prefetcher builds one batch past the stop step", "glmjax/prefetch.py",
             "for step in range(start, stop):", "for step in range(start, stop + 1):",
             (_PREFETCH + "test_no_batch_is_built_past_the_stop_step",)),
    Mutation("the prefetcher goes on building after a batch failed", "glmjax/prefetch.py",
             "if item[2] is not None or self._closed.is_set():", "if self._closed.is_set():",
             (_PREFETCH + "test_no_batch_is_built_after_one_fails",)),
    Mutation("a get retried after a failed batch waits forever on the queue",
             "glmjax/prefetch.py", "    if self._failed is not None:\n",
             "    if False:\n",
             (_PREFETCH + "test_asking_again_after_a_failed_batch_raises_at_once_naming_the_"
              "failure",)),
    Mutation("a get past the stop step waits forever on the queue", "glmjax/prefetch.py",
             "    if step >= self._stop:\n", "    if False:\n",
             (_PREFETCH + "test_asking_past_the_stop_step_is_refused_rather_than_waited_on",)),
    Mutation("context masking takes unsorted draws (a row depends on the rows beside it)",
             "glmjax/data/masking.py",
             "  smallest = np.take_along_axis(\n      smallest, np.argsort(np.take_along_axis("
             "keys, smallest, axis=1), axis=1), axis=1)\n", "",
             ("tests/test_recipe.py::test_a_row_s_context_masking_does_not_depend_on_the_rows_"
              "masked_with_it",)),
    Mutation("ModelConfig accepts rope_2d with a head dim of 2 mod 4",
             "glmjax/model/model_config.py",
             'rotary_multiple = {"rope_2d": 4, "rope": 2}',
             'rotary_multiple = {"rope_2d": 2, "rope": 2}',
             ("tests/test_config_validation.py::test_rope_2d_with_a_head_dim_not_a_multiple_of_"
              "four_is_refused_when_built_directly",)),
    Mutation("ModelConfig accepts heads that do not divide the width",
             "glmjax/model/model_config.py", "    if self.hidden_size % self.num_heads:\n",
             "    if False:\n",
             ("tests/test_config_validation.py::test_a_model_config_built_directly_refuses_heads_"
              "that_do_not_divide_the_width_or_a_size_of_0",)),
    Mutation("a step's model FLOPs count the chunk-rounded logit positions, not the scored",
             "glmjax/step.py",
             'tokens=batch["tokens"].size, logit_positions=sums["scored_positions"],',
             'tokens=batch["tokens"].size, logit_positions=sums["logit_positions"],',
             ("tests/test_flops.py::test_compiled_flops_drop_by_the_vocabulary_share_when_only_"
              "part_b_is_scored",)),
    Mutation("the model's attention dropout runs at the hidden dropout rate",
             "glmjax/model/glm.py", "dropout_rate=cfg.attention_dropout if use_dropout",
             "dropout_rate=cfg.hidden_dropout if use_dropout",
             (_SEMANTICS + "test_the_model_asks_its_attention_for_the_attention_dropout_rate_not_"
              "the_hidden_one", _SEMANTICS + "test_attention_dropout_alone_makes_a_training_"
              "forward_random")),
    Mutation("a dropout after the final LayerNorm", "glmjax/model/glm.py",
             '    x = LayerNorm(cfg, name="final_layernorm")(x)\n',
             '    x = LayerNorm(cfg, name="final_layernorm")(x)\n'
             "    x = nn.Dropout(cfg.hidden_dropout, deterministic=deterministic)(x)\n",
             (_SEMANTICS + "test_a_training_forward_returns_the_final_layernorm_output_"
              "undropped",)),
    Mutation("every scanned layer initialised with the same weights", "glmjax/model/glm.py",
             'split_rngs={"params": True, "dropout": True}',
             'split_rngs={"params": False, "dropout": True}',
             (_SEMANTICS + "test_each_layer_of_a_scanned_stack_is_initialised_with_its_own_"
              "weights",)),
    Mutation("a dropout on the attention context before its output projection",
             "glmjax/model/glm.py",
             "    context = nn.with_logical_constraint(context, HEAD_AXES)\n",
             "    context = nn.with_logical_constraint(context, HEAD_AXES)\n"
             "    context = nn.Dropout(cfg.hidden_dropout, "
             "deterministic=self.deterministic)(context)\n",
             (_SEMANTICS + "test_the_attention_output_projection_sees_every_context_entry_of_a_"
              "training_forward",)),
    Mutation("embedding dropout drops the word embeddings only, not the position ones",
             "glmjax/model/glm.py", _WORDS + _POSITIONS + _EMBEDDING_DROPOUT,
             _WORDS + _EMBEDDING_DROPOUT + _POSITIONS,
             (_SEMANTICS + "test_embedding_dropout_drops_the_sum_of_word_and_position_"
              "embeddings_with_one_mask",)),
    Mutation("the model ignores rope_theta (rotates at base 10000)", "glmjax/model/glm.py",
             "block_position_ids, cfg.rope_theta)", "block_position_ids, 10000.0)",
             ("tests/test_model.py::test_flax_forward_equals_numpy_forward[rope_2d-pre-gelu-"
              "gelu_tanh-500.0]",)),
    Mutation("sentence windows cut a row with no sentence end in its room to no text",
             "glmjax/data/sentences.py", "text_len = np.where(cut > 0, cut, text_len)",
             "text_len = cut",
             ("tests/test_infilling.py::test_sentence_windows_keep_a_row_whole_when_no_sentence_"
              "ends_inside_its_room_or_one_ends_it",)),
    # Gradients through the compute-dtype view of the projections (step.summed_gradients).
    Mutation("the step differentiates the float32 parameters again", "glmjax/step.py",
             "view = model_lib.in_compute_dtype(params, model.config)", "view = params",
             ("tests/test_aot_gpu.py::test_the_backward_loop_stacks_the_projections_gradients_"
              "in_bfloat16",)),
    Mutation("the step returns the view's bfloat16 gradients", "glmjax/step.py",
             "    return in_params_dtype(grads), sums\n", "    return grads, sums\n",
             ("tests/test_gradients_in_compute_dtype.py::test_gradients_through_the_compute_"
              "dtype_view_equal_the_float32_parameters_gradients",)),
    Mutation("the view casts the embedding tables too", "glmjax/model/param_trees.py",
             'name.endswith("_kernel")', 'name.endswith(("_kernel", "embeddings"))',
             ("tests/test_gradients_in_compute_dtype.py::test_the_view_casts_the_projections_"
              "kernels_and_nothing_else",)),
    Mutation("the view casts the biases too (their gradients rounded to bfloat16)",
             "glmjax/model/param_trees.py", 'name.endswith("_kernel")',
             'name.endswith(("_kernel", "bias"))',
             ("tests/test_gradients_in_compute_dtype.py::test_the_view_casts_the_projections_"
              "kernels_and_nothing_else",
              "tests/test_gradients_in_compute_dtype.py::test_gradients_through_the_compute_"
              "dtype_view_equal_the_float32_parameters_gradients")),
    Mutation("a projection's bias gradient is summed in the compute dtype", "glmjax/model/glm.py",
             "((), ())),\n                             preferred_element_type=jnp.float32)",
             "((), ())),\n                             preferred_element_type=ones.dtype)",
             ("tests/test_gradients_in_compute_dtype.py::test_a_projection_s_bias_gradient_is_"
              "the_float32_sum_over_its_tokens",
              "tests/test_aot_gpu.py::test_no_reduction_in_the_step_adds_in_bfloat16")),
    Mutation("a projection's bias gradient is a float32 convert and reduce (a second GeLU pass)",
             "glmjax/model/glm.py", "_token_sum(cotangent, bias.ndim)",
             "jnp.sum(cotangent.astype(jnp.float32), "
             "axis=tuple(range(cotangent.ndim - bias.ndim)))",
             ("tests/test_aot_gpu.py::test_the_layers_backward_passes_over_the_mlp_s_wide_arrays_"
              "as_often_with_float32_bias_sums",)),
    Mutation("the view widens bfloat16 parameters to a float32 compute dtype",
             "glmjax/model/param_trees.py", "            and narrower < leaf.dtype.itemsize)", ")",
             ("tests/test_gradients_in_compute_dtype.py::test_the_view_never_widens_and_refuses_"
              "boxed_parameters",)),
    Mutation("the view passes boxed parameters through uncast", "glmjax/model/param_trees.py",
             'raise TypeError("in_compute_dtype takes unboxed parameters: pass '
             'nn.meta.unbox(params).")', "return params",
             ("tests/test_gradients_in_compute_dtype.py::test_the_view_never_widens_and_refuses_"
              "boxed_parameters",)),
    Mutation("GLM-10B's stage 1 decays weights by 0.01, not 0.1", "glmjax/recipes.py",
             "eps=1e-8, weight_decay=0.1,", "eps=1e-8, weight_decay=0.01,",
             ("tests/test_config.py::test_glm_10b_carries_the_original_data_recipe_and_its_second_stage",)),
    Mutation("GLM-10B's stage 1 decays linearly", "glmjax/recipes.py",
             'decay_steps=175_000, schedule="cosine"', 'decay_steps=175_000, schedule="linear"',
             ("tests/test_config.py::test_glm_10b_carries_the_original_data_recipe_and_its_second_stage",)),
    Mutation("GLM-10B's stage 2 decays over 5k steps, not 50k", "glmjax/recipes.py",
             "warmup_ratio=0.005, decay_steps=50_000,", "warmup_ratio=0.005, decay_steps=5_000,",
             ("tests/test_config.py::test_glm_10b_carries_the_original_data_recipe_and_its_second_stage",)),
    Mutation("GLM-10B's stage 1 takes 512 rows a step", "glmjax/recipes.py",
             "batch_size=1024, blank_prob=0.5,", "batch_size=512, blank_prob=0.5,",
             ("tests/test_config.py::test_glm_10b_carries_the_original_data_recipe_and_its_second_stage",)),
    Mutation("the train step keeps the state it is given (two states in device memory)",
             "glmjax/step.py", "out_shardings=(shardings, None), donate_argnums=0)",
             "out_shardings=(shardings, None))",
             ("tests/test_train_step.py::test_the_train_step_donates_the_state_it_is_given",)),
    Mutation("a skipped step does not count (the step and its batch stall)", "glmjax/step.py",
             "new_state = TrainState(step=state.step + 1,",
             "new_state = TrainState(step=jnp.where(finite, state.step + 1, state.step),",
             ("tests/test_train_step.py::test_nonfinite_loss_skips_the_update",)),
    Mutation("a non-finite step's FLOPs are left out of its log line's mean", "glmjax/loop.py",
             '    self.flops.append(float(host["model_flops"]))\n',
             '    if not bool(host["nonfinite"]):\n'
             '      self.flops.append(float(host["model_flops"]))\n',
             ("tests/test_loop.py::test_a_log_line_s_throughput_is_that_of_the_steps_since_the_"
              "previous_log_line",)),
    Mutation("a loss chunk of 0 reaches the loop", "glmjax/loss.py",
             "  if chunk < 1:\n", "  if False:\n",
             (_LOSS + "test_a_loss_chunk_below_one_is_refused_not_read_as_the_default",)),
    # Mutation hunt of session 31: micro-batches, per-objective sums, schedule, optimizer.
    Mutation("micro-batch i holds a contiguous block of rows, not rows i, i + k, ...",
             "glmjax/step.py",
             "return x.reshape(x.shape[0] // count, count, *x.shape[1:]).swapaxes(0, 1)",
             "return x.reshape(count, x.shape[0] // count, *x.shape[1:])",
             ("tests/test_train_step.py::test_the_dropout_rng_is_the_seed_folded_with_the_step_"
              "then_the_micro_batch",)),
    Mutation("per-objective loss sums add row means instead of token losses", "glmjax/step.py",
             '"objective_loss_sum": row_loss @ objective,',
             '"objective_loss_sum": (row_loss / jnp.maximum(row_weight, 1.0)) @ objective,',
             ("tests/test_evaluate.py::test_the_held_out_report_equals_a_numpy_computation_on_"
              "the_same_batches",)),
    Mutation("warmup runs one step ahead (lr(0) > 0)", "glmjax/optim.py",
             "warm = peak * step / max(warmup, 1)", "warm = peak * (step + 1) / max(warmup, 1)",
             ("tests/test_optim.py::test_warmup_then_cosine_matches_the_reference_formula",)),
    Mutation("Part B loss credits a position to row (position mod rows)", "glmjax/loss.py",
             "row_of = positions // length", "row_of = positions % rows",
             (_LOSS + "test_part_b_loss_equals_the_full_logits_loss_in_values_and_gradients",)),
    Mutation("the loss's backward ignores the cotangent of loss_sum", "glmjax/loss.py",
             "return ((g * d_hidden.astype(jnp.float32)).astype(d_hidden.dtype),\n"
             "          (g * d_embeddings.astype(jnp.float32)).astype(d_embeddings.dtype),",
             "return (d_hidden, d_embeddings,",
             (_LOSS + "test_the_gradient_of_a_scaled_loss_is_scaled_as_the_loss_is",)),
    Mutation("linear decay ends at (1 - final_ratio) x lr", "glmjax/optim.py",
             "decayed = peak * (1 - (1 - final_ratio) * progress)",
             "decayed = peak * (1 - final_ratio * progress)",
             ("tests/test_optim.py::test_linear_decay_reaches_the_final_ratio",)),
    Mutation("gradient clipping applied to AdamW's updates, not the gradients", "glmjax/optim.py",
             'transforms.append(in_float32(adamw) if optim_config.moments_dtype == "float32" '
             "else adamw)",
             'transforms.insert(0, in_float32(adamw) if optim_config.moments_dtype == "float32" '
             "else adamw)",
             ("tests/test_train_step.py::test_learning_rate_in_the_step_equals_optax_adamw_with_"
              "the_schedule",)),
    Mutation("weight decay decided by a leaf's top-level key", "glmjax/optim.py",
             "return bool(names) and _decays(names[-1])",
             "return bool(names) and _decays(names[0])",
             ("tests/test_optim.py::test_weight_decay_skips_layernorm_and_biases",)),
    Mutation("Part B logits computed in the compute dtype (bfloat16 log-softmax)",
             "glmjax/loss.py",
             'logits = jnp.einsum("ch,vh->cv", h, embeddings, preferred_element_type=jnp.float32)',
             'logits = jnp.einsum("ch,vh->cv", h, embeddings)',
             (_LOSS + "test_bfloat16_hidden_states_give_the_full_logits_loss_within_bfloat16_"
              "rounding",)),
    Mutation("the Part B loss leaves out the positions of its last, partial chunk",
             "glmjax/loss.py", "num_chunks = (count + chunk - 1) // chunk",
             "num_chunks = count // chunk",
             (_LOSS + "test_part_b_loss_equals_the_full_logits_loss_in_values_and_gradients",)),
    Mutation("the training forward runs deterministic (no dropout while training)",
             "glmjax/step.py",
             "forward = functools.partial(loss_sums, model=model, deterministic=False, "
             "loss_chunk=loss_chunk,",
             "forward = functools.partial(loss_sums, model=model, deterministic=True, "
             "loss_chunk=loss_chunk,",
             ("tests/test_train_step.py::test_the_dropout_rng_is_the_seed_folded_with_the_step_"
              "then_the_micro_batch",)),
)
