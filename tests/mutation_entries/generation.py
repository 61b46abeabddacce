"""Planted bugs in generation and in the weight mapping of imported checkpoints."""
from mutation_entries import Mutation

_P = "tests/test_prompts_and_sampling.py::"

_G = "tests/test_generate.py::"
_GC = "tests/test_generate_command.py::"
_COMMAND = (_G + "test_the_command_fills_the_text_prompts_then_the_file_s_and_replaces_the_output_"
            "file")
# The sampler's cuts, from the temperature division to the draw: moved below as one bug.
_CUTS = ("    kth = jax.lax.top_k(logits, sampling.top_k)[0][:, -1:]\n"
         "    logits = jnp.where(logits < kth, -jnp.inf, logits)\n"
         "  if sampling.top_p < 1.0:\n"
         "    ordered = jnp.sort(logits, axis=-1)[:, ::-1]\n"
         "    cumulative = jnp.cumsum(jax.nn.softmax(ordered, axis=-1), axis=-1)\n"
         "    # The original's rule (generate_samples.py top_k_logits): a token stays while the "
         "tokens\n"
         "    # before it hold at most top_p, so a mass of exactly p before it keeps it.\n"
         "    before = jnp.pad(cumulative[:, :-1], ((0, 0), (1, 0)))\n"
         "    cut = jnp.sum(before <= sampling.top_p, axis=-1)\n"
         "    threshold = jnp.take_along_axis(ordered, cut[:, None] - 1, axis=-1)\n"
         "    logits = jnp.where(logits < threshold, -jnp.inf, logits)\n")
_DRAW = "  return jax.vmap(jax.random.categorical)(keys, logits).astype(jnp.int32)"
_DIVIDE = "  logits = logits / sampling.temperature\n"

ENTRIES = (
    Mutation("an [sMASK] blank is encoded as [gMASK]", "glmjax/generate.py",
             '"sMASK": specials.smask,', '"sMASK": specials.gmask,',
             (_P + "test_each_blank_kind_is_encoded_as_its_own_special_id",)),
    Mutation("a filled blank loses the whitespace it ends in", "glmjax/generate.py",
             "filled = filled.lstrip()", "filled = filled.strip()",
             (_P + "test_a_filled_blank_keeps_the_whitespace_at_its_end",)),
    Mutation("a generated token of id 0 is dropped from its blank", "glmjax/decoding.py",
             "if token >= 0 and index < num_blanks:", "if token > 0 and index < num_blanks:",
             (_P + "test_the_tokens_of_each_blank_are_split_out_of_a_decoded_row_token_0_"
              "included",)),
    Mutation("the sampler may give the [SEP] and [UNK] appended to a GPT-2 vocabulary",
             "glmjax/generate.py", "allowed[:tokenizer.base_vocab_size] = True",
             "allowed[:tokenizer.ids_used] = True",
             (_P + "test_the_sampler_never_gives_the_sep_and_unk_that_glm_appended_to_the_gpt2_"
              "vocabulary",)),
    Mutation("decoding ends a blank at [eop] only, not at eos", "glmjax/decoding.py",
             "stop = jnp.isin(chosen, specials.ends)",
             "stop = chosen == specials.ends[0]",
             (_G + "test_a_blank_whose_model_gives_eop_or_eos_first_is_empty",)),
    Mutation("generate hands decoding [eop] twice as the ends of a blank (eos lost)",
             "glmjax/generate.py", "np.asarray([specials.eop, specials.eos],",
             "np.asarray([specials.eop, specials.eop],",
             (_G + "test_a_blank_whose_model_gives_eop_or_eos_first_is_empty",)),
    Mutation("generate called as a library lets top_k cut a greedy decode", "glmjax/generate.py",
             "  check_sampling(sampling)\n  # A blank's last token",
             "  # A blank's last token",
             (_G + "test_generate_itself_refuses_sampling_settings_that_would_be_ignored",)),
    Mutation("generate takes --batch_size=0 (a bare range() error)", "glmjax/generate.py",
             "  if batch_size < 1:\n", "  if batch_size < 0:\n",
             (_G + "test_generate_itself_refuses_sampling_settings_that_would_be_ignored",)),
    Mutation("a rope model's blanks are held to the block position table it does not have",
             "glmjax/generate.py", 'if (config.position_tables\n      and ',
             "if (", (_G + "test_a_rope_model_fills_a_blank_longer_than_max_position",)),
    Mutation("a rope model's prompts are held to the position table it does not have",
             "glmjax/generate.py", "if config.position_tables and len(prompt.part_a)",
             "if len(prompt.part_a)", (_G + "test_a_rope_model_fills_a_blank_longer_than_max_"
                                        "position",)),
    Mutation("top_p cuts the distribution at temperature 1, not the sampling temperature",
             "glmjax/decoding.py", _DIVIDE + "  if sampling.top_k > 0:\n" + _CUTS + _DRAW,
             "  if sampling.top_k > 0:\n" + _CUTS + _DIVIDE + _DRAW,
             (_P + "test_top_p_cuts_the_distribution_at_the_temperature_it_is_sampled_at",)),
    Mutation("a prompt file of blank lines fills nothing, silently", "glmjax/generate.py",
             "  if not texts:\n    raise", "  if False:\n    raise",
             (_P + "test_a_prompt_file_of_blank_lines_or_of_json_that_is_not_an_object_is_"
              "named",)),
    Mutation("a prompt file line holding a JSON string or list fails as a bare TypeError",
             "glmjax/generate.py", "except (ValueError, KeyError, TypeError) as error:",
             "except (ValueError, KeyError) as error:",
             (_P + "test_a_prompt_file_of_blank_lines_or_of_json_that_is_not_an_object_is_"
              "named",)),
    Mutation("a prompt filling its whole 64-token bucket compiles the next bucket's program",
             "glmjax/generate.py", "width = -(-longest // BUCKET) * BUCKET",
             "width = (longest // BUCKET + 1) * BUCKET",
             (_G + "test_prompts_of_other_lengths_within_a_bucket_compile_nothing_new",)),
    Mutation("a Megatron file without args is split into heads of 128 dims, not 64",
             "glmjax/convert/mapping.py", "HEAD_DIM = 64 ", "HEAD_DIM = 128 ",
             ("tests/test_convert.py::test_a_megatron_file_without_args_gets_heads_of_64_dims",)),
    Mutation("generate --text=... --input=FILE fills the --text prompts only",
             "glmjax/generate.py",
             "    named |= _read_prompts(args.input) if args.input else {}\n",
             "    named = named or _read_prompts(args.input)\n", (_COMMAND,)),
    Mutation("a prompt too long is named by its number among all prompts, not its --input line",
             "glmjax/generate.py", "args.batch_size, sources=list(named))", "args.batch_size)",
             ("tests/test_generate_command.py::test_a_prompt_too_long_for_the_model_is_refused_"
              "before_the_model_loads_or_any_is_filled",)),
    Mutation("generate --output appends to the file of an earlier run", "glmjax/generate.py",
             'with open(args.output, "w", encoding="utf-8") as handle:',
             'with open(args.output, "a", encoding="utf-8") as handle:', (_COMMAND,)),
    Mutation("generate ignores --max_tokens (always 32)", "glmjax/generate.py",
             "max_blank_tokens=args.max_tokens)", "max_blank_tokens=32)", (_COMMAND,)),
    Mutation("generate runs with --workdir but no prompt, or a prompt but no --workdir",
             "glmjax/generate.py", "if not args.workdir or not (args.text or args.input):",
             "if not args.workdir and not (args.text or args.input):",
             (_GC + "test_the_command_refuses_a_command_line_without_a_workdir_or_a_prompt",)),
    Mutation("a prompt whose \"text\" is null or a number reaches the tokenizer (a traceback)",
             "glmjax/generate.py", "      if not isinstance(text, str):", "      if False:",
             (_P + "test_a_prompt_file_of_blank_lines_or_of_json_that_is_not_an_object_is_named",)),
    Mutation("top_k draws its k tokens uniformly", "glmjax/decoding.py",
             "    logits = jnp.where(logits < kth, -jnp.inf, logits)",
             "    logits = jnp.where(logits < kth, -jnp.inf, 0.0)",
             ("tests/test_prompts_and_sampling.py::test_temperature_divides_the_logits_and_top_k_"
              "keeps_the_k_likeliest",)),
    # Session 28's hunt: the command's flags, the sampler's cuts together, the steps and keys.
    Mutation("generate ignores --top_p", "glmjax/generate.py",
             "top_p=args.top_p, max_blank_tokens=args.max_tokens)",
             "max_blank_tokens=args.max_tokens)",
             (_GC + "test_the_command_hands_every_sampling_flag_the_seed_and_the_batch_size_to_"
              "generate",)),
    Mutation("generate ignores --seed", "glmjax/generate.py",
             "sampling=sampling, seed=args.seed,", "sampling=sampling,",
             (_GC + "test_the_command_hands_every_sampling_flag_the_seed_and_the_batch_size_to_"
              "generate",)),
    Mutation("top_p drops a token whose predecessors hold exactly p (the original keeps it)",
             "glmjax/decoding.py", "cut = jnp.sum(before <= sampling.top_p, axis=-1)",
             "cut = jnp.sum(before < sampling.top_p, axis=-1)",
             (_P + "test_top_p_keeps_a_token_when_the_tokens_before_it_hold_exactly_p_as_the_"
              "original_does",)),
    Mutation("top_p is dropped when top_k is given", "glmjax/decoding.py",
             "  if sampling.top_p < 1.0:", "  elif sampling.top_p < 1.0:",
             (_P + "test_top_k_and_top_p_together_cut_top_p_from_what_top_k_keeps",)),
    Mutation("the step budget cuts the last blank short", "glmjax/decoding.py",
             "return num_blanks * sampling.max_blank_tokens",
             "return num_blanks * sampling.max_blank_tokens - 1",
             (_G + "test_blanks_that_never_end_by_themselves_each_get_max_tokens",)),
    Mutation("the k-th token of every blank is drawn with the same key", "glmjax/decoding.py",
             "keys = jax.vmap(lambda key: jax.random.fold_in(key, s))(prompts.keys)",
             "keys = jax.vmap(jax.random.fold_in)(prompts.keys, count)",
             (_G + "test_each_token_of_each_blank_is_drawn_with_its_own_key",)),
    Mutation("a blank cut at max_tokens is read before it ends (later blanks see its last token)",
             "glmjax/decoding.py",
             "    ends = stop | (count + 1 >= sampling.max_blank_tokens)\n"
             "    count = count + 1\n"
             "    out = out.at[:, s].set(jnp.where(active & ~stop, chosen, -1))\n",
             "    ends = stop | (count >= sampling.max_blank_tokens)\n"
             "    count = count + 1\n"
             "    out = out.at[:, s].set(jnp.where(active & ~ends, chosen, -1))\n",
             (_G + "test_a_blank_cut_at_max_tokens_is_seen_by_the_later_blanks_without_its_last_"
              "token",)),
    Mutation("whitespace after the last blank gets no eos (the original gives it one)",
             "glmjax/generate.py", "  if pieces[-1]:\n", "  if pieces[-1].strip():\n",
             (_P + "test_whitespace_after_the_last_blank_is_text_and_gets_an_eos_as_in_the_"
              "original",)),
)
