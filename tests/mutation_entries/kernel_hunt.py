"""Planted bugs in the Part B loss and the attention kernels' start-up check that passed the
suite (session 38's kernel hunt): a width that does not split over fsdp, float32 vocabulary
matmuls under bfloat16, an unshifted softmax, ties inside one vocabulary shard, tokamax's GPU
backward swapping dk and dv, and a start-up check that is too lenient or stops too early."""
from mutation_entries import Mutation

_LOSS, _CHOICE = "glmjax/loss.py", "glmjax/attention_choice.py"
_LOSS_TESTS = "tests/test_loss.py::"
_BF16_MATMULS = (_LOSS_TESTS + "test_with_bfloat16_hidden_states_every_vocabulary_matmul_reads_"
                 "bfloat16_operands",)

ENTRIES = (
    Mutation("the embedding gradient is reduce-scattered over fsdp even when the width does not "
             "split", _LOSS, "  if embeddings.shape[1] % size(scatter_axes):\n"
             "    scatter_axes = ()\n", "",
             (_LOSS_TESTS + "test_a_width_that_does_not_split_over_fsdp_gives_the_full_logits_"
              "values_and_gradients",)),
    Mutation("the loss keeps float32 embeddings as they are under bfloat16 hidden states",
             _LOSS, "hidden, jnp.asarray(embeddings, hidden.dtype), jnp.asarray(targets, "
             "jnp.int32),", "hidden, jnp.asarray(embeddings), jnp.asarray(targets, jnp.int32),",
             _BF16_MATMULS),
    Mutation("the loss's backward vocabulary matmuls read float32 d_logits", _LOSS,
             "      d_logits = d_logits.astype(hidden.dtype)\n", "", _BF16_MATMULS),
    Mutation("the loss's softmax is not shifted by the top logit (overflows past ~88)", _LOSS,
             "[jnp.sum(jnp.exp(logits - top[:, None]), axis=-1), jnp.where(owned, picked, 0.0)]))"
             "\n    log_z = top + jnp.log(sum_exp)",
             "[jnp.sum(jnp.exp(logits), axis=-1), jnp.where(owned, picked, 0.0)]))\n"
             "    log_z = jnp.log(sum_exp)",
             (_LOSS_TESTS + "test_logits_far_above_float32_s_exp_range_give_a_finite_loss_and_"
              "gradients",)),
    Mutation("a top logit tied inside one vocabulary shard is predicted as its last id", _LOSS,
             "jnp.where(local_max == top, jnp.argmax(logits, axis=-1) + offset,",
             "jnp.where(local_max == top, local_vocab - 1 - jnp.argmax(logits[:, ::-1], axis=-1)"
             " + offset,",
             (_LOSS_TESTS + "test_a_top_logit_tied_within_one_vocabulary_shard_is_predicted_as_"
              "its_first_id",)),
)
