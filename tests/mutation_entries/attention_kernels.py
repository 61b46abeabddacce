"""Planted bugs in attention, its masks, positions and kernels."""
from mutation_entries import Mutation

_ATTENTION = "tests/test_attention.py::"
_CHOICE = "tests/test_attention_choice.py::"
_DENSE = "tests/test_dense_attention.py::"
_XLA = "tests/test_xla_options.py::"
_GPU_AUTO = ("tests/test_config_attention.py::test_auto_for_a_gpu_target_takes_tokamax_on_"
             "sm90_and_sm100_and_cudnn_on_other_gpus")

ENTRIES: tuple[Mutation, ...] = (
    Mutation("rope (1-D) rotates at the default base, ignoring model.rope_theta",
             "glmjax/model/positions.py",
             "return apply_rope(q, position_ids, theta), apply_rope(k, position_ids, theta)",
             "return apply_rope(q, position_ids), apply_rope(k, position_ids)",
             ("tests/test_positions.py::test_rope_and_rope_2d_rotate_queries_and_keys_at_the_"
              "configured_base",)),
    Mutation("splash compiled for a GPU emits the Mosaic TPU kernel instead of interpreting",
             "glmjax/model/attention.py", 'interpret=platform != "tpu")',
             'interpret=platform == "cpu")',
             (_ATTENTION + "test_splash_compiled_for_a_platform_other_than_tpu_runs_in_the_pallas_"
              "interpreter",)),
    Mutation("a fused kernel refuses a dropout rate that comes with no rng",
             "glmjax/model/attention.py", "and dropout_rng is not None):", "):",
             (_ATTENTION + "test_a_fused_kernel_given_a_dropout_rate_and_no_rng_attends_without_"
              "dropout",)),
    Mutation("splash tiles every sequence in its smallest block (128)", "glmjax/model/splash.py",
             "BLOCK_CHOICES = (512, 256, 128)", "BLOCK_CHOICES = (128, 256, 512)",
             (_ATTENTION + "test_splash_tiles_a_sequence_with_the_largest_of_its_blocks_that_"
              "divides_it",)),
    Mutation("tokamax's off-GPU backward pulls a float32 cotangent through bfloat16 attention",
             "glmjax/model/gpu_kernels.py",
             "return jax.vjp(attend, q, k, v)[1](cotangent.astype(q.dtype))",
             "return jax.vjp(attend, q, k, v)[1](cotangent.astype(jnp.float32))",
             (_ATTENTION + "test_bfloat16_inputs_give_bfloat16_outputs_and_gradients_within_"
              "bfloat16_rounding[tokamax]",)),
    Mutation("the row split's causal (Part B) call uses the default scale",
             "glmjax/model/gpu_kernels.py",
             "q, k, v, scale=scale, is_causal=True, implementation=implementation))",
             "q, k, v, is_causal=True, implementation=implementation))",
             (_DENSE + "test_a_scale_given_to_the_row_split_is_applied_to_part_a_and_part_b_"
              "rows",)),
    Mutation("tokamax's off-GPU backward recomputes with the default scale",
             "glmjax/model/gpu_kernels.py",
             "attend = lambda q, k, v: dense.dense_attention(q, k, v, key_end, scale)",
             "attend = lambda q, k, v: dense.dense_attention(q, k, v, key_end, "
             "q.shape[-1] ** -0.5)",
             (_DENSE + "test_the_gradients_of_masked_attention_use_the_scale_it_is_given"
              "[tokamax]",)),
    Mutation("tokamax counted usable only above sm90 (an H100 gets cuDNN)",
             "glmjax/attention_choice.py", "return 9.0 <= float(", "return 9.0 < float(",
             (_GPU_AUTO + "[H100]",)),
    Mutation("auto on a GPU prefers cuDNN to tokamax", "glmjax/attention_choice.py",
             '"gpu": ("tokamax", "cudnn", REFERENCE),', '"gpu": ("cudnn", "tokamax", REFERENCE),',
             (_GPU_AUTO + "[H100]",)),
    Mutation("an unchecked GPU target takes tokamax on a GPU older than sm90",
             "glmjax/attention_choice.py", 'if candidate != "tokamax" or _tokamax_usable(device):',
             "if True:", (_GPU_AUTO + "[A100]",)),
    Mutation("a float32 kernel on an accelerator held to float32's exact tolerance",
             "glmjax/attention_choice.py",
             'exact = dtype == jnp.float32 and device.platform == "cpu"',
             "exact = dtype == jnp.float32",
             (_CHOICE + "test_a_float32_kernel_on_an_accelerator_is_held_to_bfloat16_s_"
              "tolerance_not_float32_s",)),
    Mutation("the start-up check's ragged Part A may end on an even token (a block boundary)",
             "glmjax/attention_choice.py", "((seq_len * 3) // 10) | 1", "(seq_len * 3) // 10",
             (_CHOICE + "test_the_start_up_check_rejects_a_kernel_that_is_exact_only_where_"
              "part_a_ends_on_a_block[128]",
              _CHOICE + "test_the_start_up_check_rejects_a_kernel_that_is_exact_only_where_"
              "part_a_ends_on_a_block[256]")),
    Mutation("the start-up check measures absolute errors, not relative ones",
             "glmjax/attention_choice.py",
             "errors = [float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-6))",
             "errors = [float(jnp.max(jnp.abs(a - b)))",
             (_CHOICE + "test_the_start_up_check_reports_each_error_relative_to_the_largest_"
              "reference_value",)),
    Mutation("the start-up check never tries an empty Part A", "glmjax/attention_choice.py",
             "sep = jnp.array([0, ((seq_len * 3) // 10) | 1, seq_len], jnp.int32)",
             "sep = jnp.array([1, ((seq_len * 3) // 10) | 1, seq_len], jnp.int32)",
             (_CHOICE + "test_the_start_up_check_rejects_a_kernel_that_fails_only_when_part_"
              "a_is_empty_or_whole[empty]",)),
    Mutation("the start-up check never tries a Part A of the whole row",
             "glmjax/attention_choice.py",
             "sep = jnp.array([0, ((seq_len * 3) // 10) | 1, seq_len], jnp.int32)",
             "sep = jnp.array([0, ((seq_len * 3) // 10) | 1, seq_len // 2], jnp.int32)",
             (_CHOICE + "test_the_start_up_check_rejects_a_kernel_that_fails_only_when_part_"
              "a_is_empty_or_whole[whole]",)),
    Mutation("GPU programs keep the dynamic-slice fusion that ran each attention forward twice",
             "glmjax/xla_options.py", '"xla_gpu_enable_dynamic_slice_fusion": False,',
             '"xla_gpu_enable_dynamic_slice_fusion": True,',
             (_XLA + "test_gpu_programs_go_without_the_slice_fusion_that_ran_each_attention_"
              "forward_twice",)),
    Mutation("an option the user's XLA_FLAGS names is overridden by glmjax's table",
             "glmjax/xla_options.py", "if name not in named}", "if name}",
             (_XLA + "test_an_option_that_xla_flags_names_is_left_to_the_flag[--xla_gpu_enable_"
              "dynamic_slice_fusion=true]",)),
    Mutation("the train step is compiled without the program's XLA options", "glmjax/step.py",
             """lowered = self.train_step.lower(self.abstract_state, batch)
    return xla_options.compiled(lowered, self.compiler_options)""",
             """lowered = self.train_step.lower(self.abstract_state, batch)
    return xla_options.compiled(lowered, {})""",
             (_XLA + "test_the_train_and_eval_steps_are_compiled_with_the_programs_options",)),
    Mutation("the eval step is compiled without the program's XLA options", "glmjax/step.py",
             """lowered = self.eval_step.lower(self.abstract_state.params, batch)
    return xla_options.compiled(lowered, self.compiler_options)""",
             """lowered = self.eval_step.lower(self.abstract_state.params, batch)
    return xla_options.compiled(lowered, {})""",
             (_XLA + "test_the_train_and_eval_steps_are_compiled_with_the_programs_options",)),
    Mutation("an option this XLA does not know fails the compile", "glmjax/xla_options.py",
             'if "No such compile option" not in str(error):', "if True:",
             (_XLA + "test_an_option_this_xla_does_not_know_is_dropped_with_a_warning_not_a_"
              "failed_compile",)),
    Mutation("splash returns float32 for bfloat16 inputs", "glmjax/model/splash.py",
             "scaled_q = q * jnp.asarray(scale, q.dtype)",
             "scaled_q = q * jnp.asarray(scale, jnp.float32)",
             (_ATTENTION + "test_bfloat16_inputs_give_bfloat16_outputs_and_gradients_within_"
              "bfloat16_rounding[splash]",)),
    Mutation("a fused kernel under a tensor axis computes every head on every device",
             "glmjax/model/attention.py",
             "qkv_spec = PartitionSpec(batch_axes, None, head_axes, None)",
             "qkv_spec = PartitionSpec(batch_axes, None, None, None)",
             ("tests/test_dense_attention.py::test_a_fused_kernel_under_a_mesh_gives_the_reference_"
              "whether_rows_and_heads_split_or_not",)),
)
