"""Planted bugs in the Part B loss and the attention kernels' start-up check that passed the
suite (session 38's kernel hunt): a width that does not split over fsdp, float32 vocabulary
matmuls under bfloat16, an unshifted softmax, ties inside one vocabulary shard, tokamax's GPU
backward swapping dk and dv, and a start-up check that is too lenient or stops too early."""
from mutation_entries import Mutation

_LOSS, _CHOICE = "glmjax/loss.py", "glmjax/attention_choice.py"
_LOSS_TESTS = "tests/test_loss.py::"
_CHOICE_TESTS = "tests/test_attention_choice.py::"
_NEXT_KERNEL = _CHOICE_TESTS + "test_auto_tries_the_next_kernel_after_one_is_rejected"
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
    Mutation("without the tokamax package an sm90 GPU still counts as running tokamax",
             _CHOICE,
             "  except ImportError:\n    return False\n  return _gpu_is_sm90_or_sm100(device)",
             "  except ImportError:\n    return True\n  return _gpu_is_sm90_or_sm100(device)",
             ("tests/test_config_attention.py::test_without_the_tokamax_package_auto_for_an_sm90_"
              "gpu_takes_cudnn",)),
    Mutation("the start-up check's accelerator tolerance is 10%, passing a kernel 5% off",
             _CHOICE, "tolerance = 1e-4 if exact else 3e-2", "tolerance = 1e-4 if exact else 1e-1",
             (_CHOICE_TESTS + "test_a_kernel_five_percent_off_on_an_accelerator_fails_the_"
              "bfloat16_tolerance",)),
    Mutation("the start-up check's float32 cotangent meets bfloat16 outputs: every bfloat16 "
             "kernel is rejected", _CHOICE, "return (out,) + vjp(cast(cotangent))",
             "return (out,) + vjp(cotangent)",
             (_CHOICE_TESTS + "test_the_start_up_check_passes_splash_in_bfloat16", _NEXT_KERNEL)),
    Mutation("a long run's check length keeps T mod 64, not T mod 128", _CHOICE,
             "CHECK_MAX_LEN + seq_len % 128", "CHECK_MAX_LEN + seq_len % 64",
             ("tests/test_config_attention.py::test_the_start_up_check_runs_at_the_run_s_dtype_"
              "sequence_length_and_head_size",)),
    Mutation("auto stops at the first rejected kernel", _CHOICE,
             "    log.warning(\"attention=auto on %s: %s rejected: %s\", platform, candidate, "
             "reason)\n", "    log.warning(\"attention=auto on %s: %s rejected: %s\", platform, "
             "candidate, reason)\n    break\n", (_NEXT_KERNEL,)),
    Mutation("the start-up check runs one head, passing a kernel that mixes heads and positions",
             _CHOICE, "num_heads: int = 2, head_dim: int = 64,",
             "num_heads: int = 1, head_dim: int = 64,",
             (_CHOICE_TESTS + "test_the_start_up_check_rejects_a_kernel_that_mixes_heads_with_"
              "positions",)),
    Mutation("tokamax's GPU backward swaps dk and dv", "glmjax/model/gpu_kernels.py",
             'return grads["q"], grads["k"], grads["v"], None',
             'return grads["q"], grads["v"], grads["k"], None',
             ("tests/test_gpu_kernels.py::test_on_a_gpu_tokamax_s_backward_gives_each_input_its_"
              "own_gradient",)),
)
