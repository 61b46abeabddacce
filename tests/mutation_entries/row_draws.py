"""Planted bugs where one of a row's random choices reads another's draw (session 37's hunt):
each keeps every choice's own statistics, so only a test of two choices together sees it. The
same hunt's two others close the table: an initial position table and the blank budget."""
from mutation_entries import Mutation

_PIPELINE, _INFILLING = "glmjax/data/pipeline.py", "glmjax/data/infilling.py"
_T = "tests/test_row_draws.py::"
_OFFSETS = (_T + "test_a_long_document_s_windows_start_anywhere_in_it_whichever_document_it_is",)
_OBJECTIVE = (_T + "test_a_row_s_objective_does_not_depend_on_which_document_it_reads",)
_SHORT = (_T + "test_short_rows_come_at_their_rate_in_every_objective_and_among_single_span_rows",)
_LENGTH_ORDER = (_T + "test_the_span_that_reached_the_budget_lands_anywhere_not_"
                    "always_last_in_the_text",)
_PER_ROW = (_T + "test_per_batch_draws_still_give_each_row_its_own_text_span_lengths_and_part_b_"
            "order",)

ENTRIES = (
    Mutation("a long document's offset reuses the draw that picked the document", _PIPELINE,
             "infilling.STREAM_OFFSET, np.maximum(", "infilling.STREAM_DOCS, np.maximum(",
             _OFFSETS),
    # Part B's order keys from the span-length draws would once put the shortest span first;
    # with the lengths shuffled into the text it changes no statistic. Their shuffle may not.
    Mutation("the span lengths' shuffle keys are their own draws (shortest first in the text)",
             _INFILLING, "_permutation(rng, STREAM_LENGTH_ORDER,",
             "_permutation(rng, STREAM_LENGTHS,", _LENGTH_ORDER),
    Mutation("a row's objective reuses its first document draw", _PIPELINE,
             "draws.uniform(infilling.STREAM_OBJECTIVE, 1)",
             "draws.uniform(infilling.STREAM_DOCS, 1)", _OBJECTIVE),
    Mutation("with draw_per_batch every row of a step reads the same window", _PIPELINE,
             "text, piece_start, piece_avail = self.windows(rng, fetch)",
             "text, piece_start, piece_avail = self.windows(draws, fetch)", _PER_ROW),
    Mutation("the short-row draw reuses the objective draw (short rows are [MASK] rows)",
             _PIPELINE, "short = draws.uniform(infilling.STREAM_SHORT, 2)",
             "short = draws.uniform(infilling.STREAM_OBJECTIVE, 2)", _SHORT),
    Mutation("the single-span draw reuses the short-row draw (single-span rows are short)",
             _PIPELINE, "single = draws.uniform(infilling.STREAM_SINGLE_SPAN, 1)[:, 0]",
             "single = draws.uniform(infilling.STREAM_SHORT, 1)[:, 0]", _SHORT),
    Mutation("with draw_per_batch every row of a step draws the same span lengths", _PIPELINE,
             "        rng, self.length_cdf, self.mask_ratio, T)",
             "        draws, self.length_cdf, self.mask_ratio, T)", _PER_ROW),
    Mutation("with draw_per_batch rows with as many spans share one Part B order", _PIPELINE,
             "order = infilling.random_order(rng, plan.n_spans",
             "order = infilling.random_order(draws, plan.n_spans", _PER_ROW),
    Mutation("the block position table starts at zero, not N(0, init_std)", "glmjax/model/glm.py",
             'block_table = _param(self, "block_position_embeddings", _normal(cfg.init_std),',
             'block_table = _param(self, "block_position_embeddings", nn.initializers.zeros,',
             ("tests/test_model.py::test_initial_weights_have_glm_s_scaled_stds[pre]",)),
    Mutation("the blank budget leaves the [CLS] out of the text's length", _INFILLING,
             "return (mask_ratio * np.asarray(text_len, dtype=np.float64)).astype(np.int64)",
             "return (mask_ratio * (np.asarray(text_len, dtype=np.float64) - 1)).astype(np.int64)",
             ("tests/test_infilling.py::test_the_blank_budget_truncates_as_the_original_does",)),
)
