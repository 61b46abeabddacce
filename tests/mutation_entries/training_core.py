"""Planted bugs in training_core (mutation hunt of session 13)."""
from mutation_entries import Mutation  # noqa: F401  (the entries below use it)

_LOSS = "tests/test_loss.py::"
_PREFETCH = "tests/test_prefetch.py::"
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
             ("tests/test_config_validation.py::test_a_model_config_whose_heads_do_not_divide_"
              "the_width_is_refused_when_built_directly",)),
    Mutation("a step's model FLOPs count the chunk-rounded logit positions, not the scored",
             "glmjax/step.py",
             'tokens=batch["tokens"].size, logit_positions=sums["scored_positions"],',
             'tokens=batch["tokens"].size, logit_positions=sums["logit_positions"],',
             ("tests/test_flops.py::test_compiled_flops_drop_by_the_vocabulary_share_when_only_"
              "part_b_is_scored",)),
)
