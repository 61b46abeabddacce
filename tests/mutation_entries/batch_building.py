"""Planted bugs in how Part A / Part B rows are built: spans, masking, the pipeline's batches."""
from mutation_entries import Mutation

_INFILLING, _PIPELINE = "glmjax/data/infilling.py", "glmjax/data/pipeline.py"
_PLACE = "glmjax/data/span_placement.py"
_TI, _TP, _TR = "tests/test_infilling.py::", "tests/test_pipeline.py::", "tests/test_recipe.py::"
_TS = "tests/test_span_placement.py::"
_MAX_LENGTH = (_TI + "test_span_lengths_run_from_one_to_max_span_length_weighted_by_the_poisson_"
               "pmf",)
_PLACEMENT = (_TS + "test_spans_take_every_placement_the_reference_draws_the_segment_s_last_token_"
              "included",)
_GEN_LENGTH = (_TI + "test_a_row_s_generation_length_is_uniform_from_int_ratio_times_n_to_n_minus_"
               "2",)
_GEN_START = (_TI + "test_a_generation_span_inside_the_text_starts_anywhere_between_the_cls_and_"
              "the_last_token",)
_SUFFIX_RATE = (_TI + "test_a_one_document_row_takes_the_suffix_layout_at_the_rate_gen_suffix_"
                "prob",)
_SINGLE_FIRST = (_TR + "test_single_span_rows_are_drawn_before_the_objective_so_mask_rows_reach_"
                 "their_share",)
_PER_BATCH = (_TR + "test_per_batch_draws_make_every_row_of_a_step_single_span_or_none_and_short_"
              "or_none",)
_DOC_CHOICE = (_TP + "test_documents_are_drawn_in_proportion_to_their_length_and_an_empty_one_"
               "never",)
_FALLBACK = (_TP + "test_sentence_rows_of_a_text_without_a_sentence_end_fall_back_to_mask_rows_"
             "that_train",)
_PLANNED = ("tests/test_pipeline_objectives.py::"
            "test_the_planned_part_b_share_of_mask_rows_is_the_masked_share_plus_one_sop_"
            "per_span",)
_VOCAB_END = ("tests/test_data_inputs.py::test_a_special_token_id_equal_to_the_vocabulary_size_"
              "is_refused",)
_SHORT_RANGE = ("tests/test_data_inputs.py::test_a_short_row_share_past_one_is_refused_naming_"
                "the_field",)
_NAMES = ("tests/test_tokenizers.py::test_a_vocabulary_without_glm_s_tokens_gets_them_appended_"
          "under_glm_s_names",)

ENTRIES: tuple[Mutation, ...] = (
    Mutation("span lengths stop one short of data.max_span_length", _INFILLING,
             "ks = np.arange(1, max_span_length + 1)", "ks = np.arange(1, max_span_length)",
             _MAX_LENGTH),
    Mutation("a [MASK] span never ends on its segment's last token", _PLACE,
             "rng.integers(STREAM_PLACE, free, k_max)",
             "rng.integers(STREAM_PLACE, free - 1, k_max)", _PLACEMENT),
    Mutation("a row's [gMASK] length starts at int(ratio x (n - 2)), not int(ratio x n)",
             _INFILLING, "low = np.clip((gen_min_ratio * text_len).astype(np.int64), 1, high)",
             "low = np.clip((gen_min_ratio * high).astype(np.int64), 1, high)", _GEN_LENGTH),
    Mutation("a row's [gMASK] length never reaches n - 2", _INFILLING,
             "length = low + (draws[:, 1] * (high - low + 1)).astype(np.int64)",
             "length = low + (draws[:, 1] * (high - low)).astype(np.int64)", _GEN_LENGTH),
    Mutation("an inner [gMASK] span never ends just before the text's last token", _INFILLING,
             "inner = 1 + (draws[:, 2] * (text_len - 1 - length)).astype(np.int64)",
             "inner = 1 + (draws[:, 2] * (text_len - 2 - length)).astype(np.int64)", _GEN_START),
    Mutation("a one-document [gMASK] row takes the suffix layout at 1 - gen_suffix_prob",
             _INFILLING, "(draws[:, 0] < suffix_prob)", "(draws[:, 0] > suffix_prob)",
             _SUFFIX_RATE),
    Mutation("single-span rows reuse the objective's draw (taken out of the blank rows' share)",
             _INFILLING, "STREAM_SINGLE_SPAN, STREAM_SHORT = 9, 10, 11, 12",
             "STREAM_SINGLE_SPAN, STREAM_SHORT = 9, 10, 1, 12", _SINGLE_FIRST),
    Mutation("draw_per_batch still draws single-span rows per row", _PIPELINE,
             "single = draws.uniform(infilling.STREAM_SINGLE_SPAN, 1)",
             "single = rng.uniform(infilling.STREAM_SINGLE_SPAN, 1)", _PER_BATCH),
    Mutation("draw_per_batch still draws short rows per row", _PIPELINE,
             "short = draws.uniform(infilling.STREAM_SHORT, 2)",
             "short = rng.uniform(infilling.STREAM_SHORT, 2)", _PER_BATCH),
    Mutation("a pick at a document's end takes that document (empty documents are drawn)",
             _PIPELINE, "self._num_tokens - 1), side=\"right\")",
             "self._num_tokens - 1), side=\"left\")", _DOC_CHOICE),
    Mutation("an [sMASK] row without a whole sentence keeps no spans instead of [MASK] ones",
             _PIPELINE, "found = n_spans > 0", "found = n_spans >= 0", _FALLBACK),
    Mutation("the planned Part B share counts one [sop] per span plus one", _PIPELINE,
             "masked = data.mask_ratio * (1.0 + 1.0 / mean_span)",
             "masked = data.mask_ratio * (1.0 + 1.0 / (mean_span + 1.0))", _PLANNED),
    Mutation("a special token id equal to the vocabulary size is accepted", _PIPELINE,
             "if not 0 <= int(token) < vocab_size:", "if not 0 <= int(token) <= vocab_size:",
             _VOCAB_END),
    Mutation("data.short_seq_prob past 1 is accepted", _PIPELINE, "\"short_seq_prob\"):", "):",
             _SHORT_RANGE),
    Mutation("an appended [CLS] is named <s>", "glmjax/data/specials.py",
             "\"cls\": (\"[CLS]\", \"<s>\", \"<bos>\"),",
             "\"cls\": (\"<s>\", \"[CLS]\", \"<bos>\"),", _NAMES),
    Mutation("Part B reads its own targets instead of the tokens before them",
             "glmjax/data/infilling.py",
             "tokens[:, 1:] = np.where(in_b[:, 1:], targets[:, :-1], targets[:, 1:])",
             "tokens[:, 1:] = np.where(in_b[:, 1:], targets[:, 1:], targets[:, 1:])",
             ("tests/test_pipeline.py::test_blank_rows_keep_the_contract_and_decode_to_their_"
              "text",)),
    Mutation("block positions count up by two within a span", "glmjax/data/infilling.py",
             "  block = col - (packed & 0xFFFFFFFF).astype(np.int32) + 1",
             "  block = 2 * (col - (packed & 0xFFFFFFFF).astype(np.int32)) + 1",
             ("tests/test_pipeline.py::test_blank_rows_keep_the_contract_and_decode_to_their_"
              "text",)),
    Mutation("a row's key mixes seed and step + row, not step and row apart",
             "glmjax/data/pipeline.py", "    rng = RowRandom.for_rows(self.seed, step, rows)",
             "    rng = RowRandom.for_rows(self.seed, 0, rows + step)",
             ("tests/test_pipeline.py::test_a_pipeline_s_rows_of_consecutive_steps_are_not_its_rows_"
              "shifted_by_one",)),
    Mutation("a packed row's spans may cross from one document into the next",
             "glmjax/data/pipeline.py", "  return first, np.maximum(last - first, 0)",
             "  return first[:, :1], np.maximum(np.asarray(text_len)[:, None] - 1 - first[:, :1], 0)",
             ("tests/test_pipeline.py::test_blank_rows_keep_the_contract_and_decode_to_their_"
              "text",)),
    Mutation("a short row's text never reaches T tokens (U{32..T-1})", _PIPELINE,
             "(SHORT_MIN + uniform * (seq_len - SHORT_MIN + 1))",
             "(SHORT_MIN + uniform * (seq_len - SHORT_MIN))",
             (_TR + "test_a_short_row_s_text_length_takes_each_value_from_32_to_t_equally_often",)),
    # Mutation hunt of session 31: span law, placement, windows, masking, sentence rows.
    Mutation("[MASK] gaps placed unsorted (spans overlap or leave their order)", _PLACE,
             "np.sort(doc_key * wide + draws, axis=1)", "(doc_key * wide + draws)",
             (_TS + "test_place_spans_single_document_stays_inside_and_apart",)),
    Mutation("span lengths weighted by lambda^k / (k-1)! instead of the Poisson pmf", _INFILLING,
             "math.lgamma(k + 1)", "math.lgamma(k)",
             (_TI + "test_span_lengths_follow_truncated_poisson",)),
    Mutation("a segment offers m units, not m + 1 (its closing barrier forgotten)", _PLACE,
             "  free = np.take_along_axis(seg_len + 1 - held, segment, axis=1)",
             "  free = np.take_along_axis(seg_len - held, segment, axis=1)", _PLACEMENT),
    Mutation("a row that keeps k-1 spans gets its extra text token only past the budget",
             _INFILLING, "one_more = fewer & (before >= blank_budget(mask_ratio, text_len + 1))",
             "one_more = fewer & (before > blank_budget(mask_ratio, text_len + 1))",
             (_TI + "test_span_lengths_follow_truncated_poisson",)),
    Mutation("the per-batch [gMASK] length is not capped by a row's own text", _INFILLING,
             "length = np.minimum(batch_g.astype(np.int64), high)",
             "length = batch_g.astype(np.int64)",
             ("tests/test_sentence_windows.py::test_per_batch_generation_rows_cut_at_a_sentence_"
              "end_generate_only_their_own_text",)),
    Mutation("a [gMASK] span inside the text may start on the [CLS]", _INFILLING,
             "inner = 1 + (draws[:, 2] * (text_len - 1 - length)).astype(np.int64)",
             "inner = (draws[:, 2] * (text_len - length)).astype(np.int64)",
             (_TI + "test_generation_fraction_is_uniform",)),
    Mutation("the blank budget rounds int(ratio x n) up", _INFILLING,
             "return (mask_ratio * np.asarray(text_len, dtype=np.float64)).astype(np.int64)",
             "return np.ceil(mask_ratio * np.asarray(text_len, dtype=np.float64)).astype(np.int64)",
             (_TI + "test_the_blank_budget_truncates_as_the_original_does",)),
    Mutation("[MASK] rows fetch T tokens (a long document's tail out of their reach)", _PIPELINE,
             "[blank_len, T], T - 1)", "[T, T], T - 1)",
             (_TP + "test_blank_rows_keep_the_contract_and_decode_to_their_text",)),
    Mutation("a document ending exactly at the window's end writes its eos past it", _PIPELINE,
             "has_eos = start + 1 + avail < window_len",
             "has_eos = start + 1 + avail <= window_len",
             (_TP + "test_windows_are_packed_documents",)),
    Mutation("a [MASK] span may cover the row's last token", _PIPELINE,
             "last = np.minimum(first + piece_avail, np.asarray(text_len)[:, None] - 1)",
             "last = np.minimum(first + piece_avail, np.asarray(text_len)[:, None])",
             (_TP + "test_blank_rows_keep_the_contract_and_decode_to_their_text",)),
    Mutation("a short single-span row re-counts its spans for the shorter text", _PIPELINE,
             "shorter = blank_rows[(n < blank_len[blank_rows]) & ~single[blank_rows]]",
             "shorter = blank_rows[n < blank_len[blank_rows]]",
             (_TR + "test_every_option_on_is_deterministic_and_independent_of_the_host_count",)),
    Mutation("[MASK] rows of a window cut short take the padding as text", _PIPELINE,
             "n = np.minimum(blank_len[blank_rows], available[blank_rows])",
             "n = blank_len[blank_rows]",
             (_TR + "test_texts_cut_short_keep_the_masked_share_of_their_own_length",)),
    Mutation("[dBLOCK] masking applied to every row, not only [MASK] rows", _PIPELINE,
             "self._mask_inputs(rng, batch, blank_rows, plan.text_len)",
             "self._mask_inputs(rng, batch, np.arange(len(rows)), plan.text_len)",
             (_TR + "test_block_masking_rate_and_rows_in_the_pipeline",)),
    Mutation("rows keyed by their index on this host, not their global row", _PIPELINE,
             "rng = RowRandom.for_rows(self.seed, step, rows)",
             "rng = RowRandom.for_rows(self.seed, step, np.arange(len(rows)))",
             (_TP + "test_batches_are_the_same_for_any_host_split_and_on_resume",)),
    Mutation("context masking reaches only two tokens after a [MASK]", "glmjax/data/masking.py",
             "after_mask = (last_mask >= 0) & (col - last_mask <= CONTEXT_RANGE)",
             "after_mask = (last_mask >= 0) & (col - last_mask < CONTEXT_RANGE)",
             (_TR + "test_context_masking_draws_part_a_tokens_within_three_of_a_span_edge",)),
    Mutation("context masking forgets the end of Part A as a span edge", "glmjax/data/masking.py",
             "next_bound = np.where(is_mask | (col == sep), col, width + 1)",
             "next_bound = np.where(is_mask, col, width + 1)",
             (_TR + "test_context_masking_draws_part_a_tokens_within_three_of_a_span_edge",)),
    Mutation("context masking counts its ratio of Part A, not of the text",
             "glmjax/data/masking.py",
             "count = (ratio * np.asarray(text_len, np.float64)).astype(np.int64)",
             "count = (ratio * np.asarray(sep, np.float64)).astype(np.int64)",
             (_TR + "test_context_masking_draws_part_a_tokens_within_three_of_a_span_edge",)),
    Mutation("context masking may replace a [MASK] itself", "glmjax/data/masking.py",
             "candidate = part_a & ~is_mask & (after_mask | before_bound)",
             "candidate = part_a & (after_mask | before_bound)",
             (_TR + "test_context_masking_draws_part_a_tokens_within_three_of_a_span_edge",)),
    Mutation("context masking tops up with non-candidates when candidates run out",
             "glmjax/data/masking.py", "  chosen &= candidate\n", "",
             (_TR + "test_context_masking_draws_part_a_tokens_within_three_of_a_span_edge",)),
    Mutation("[sMASK] text length ignores a window cut short", "glmjax/data/sentences.py",
             "text_len = np.minimum(seq_len - 2 * k, window_len)",
             "text_len = np.full_like(window_len, seq_len) - 2 * k",
             (_TR + "test_original_sentences_start_at_the_cls_after_an_eos_and_count_the_tail",)),
    Mutation("single-span rows keep the objective they drew", _PIPELINE,
             "objective[single] = BLANK", "objective[single] = objective[single]",
             (_TR + "test_single_span_rows_have_one_poisson_span_at_their_rate",)),
    Mutation("a first document one token longer than its room always starts at offset 0",
             _PIPELINE, "long_first = avail[:, 0] + 2 > window_len[:, 0]",
             "long_first = avail[:, 0] + 1 > window_len[:, 0]",
             (_TP + "test_a_document_one_token_longer_than_its_room_takes_either_offset_with_"
              "even_odds",)),
    Mutation("a [gMASK] row's text ignores a window cut short (generates into padding)",
             _INFILLING, "text_len = np.minimum(text_len, available)", "text_len = text_len",
             (_TR + "test_short_rows_hold_a_uniformly_short_text_at_their_rate",)),
)
