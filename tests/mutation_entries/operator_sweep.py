"""Planted bugs from session 40's mechanical operator sweep (one comparison, operator, number or
boolean changed at a time in the batch builder, the loss, the step, the model, decoding, cloze
scoring, the snapshot's parts, the checksums and the config) that passed the tests of their
module: two draws of a row reading one stream (and a step's shared draws reading one row's), a
span table wider than any row needs, the last target of a [gMASK] row turned into a mask token,
one- and two-byte arrays without a checksum, a blank row's last two tokens kept where the
original keeps one, a sentence window cut back past its last sentence, a long document's offset
drawn by the next one's length, an empty document given room for a span's draw, a prepared
store reading past a document's end, a single process waiting on a collective at each snapshot,
a default mesh that one device cannot hold, and generation running every step of the prompts'
bucket after its rows are done (with its companion: the loop that never looks at the rows)."""
from mutation_entries import Mutation

_INFILLING = "glmjax/data/infilling.py"
_STREAMS = ("tests/test_row_draws.py::test_a_row_s_random_streams_have_different_numbers_and_"
            "draws",)
_DECODING = "glmjax/decoding.py"
_STOPS = "tests/test_generation_stops.py::"
_SPAN_TABLE = ("tests/test_infilling.py::test_the_span_table_is_as_wide_as_the_most_spans_a_"
               "row_can_need_and_no_wider",)

ENTRIES = (
    Mutation("the objective's draw reads the span lengths' stream", _INFILLING,
             "STREAM_OBJECTIVE, STREAM_LENGTHS, STREAM_PLACE, STREAM_ORDER = 1, 2, 3, 4",
             "STREAM_OBJECTIVE, STREAM_LENGTHS, STREAM_PLACE, STREAM_ORDER = 2, 2, 3, 4",
             _STREAMS),
    Mutation("the most spans a row can need is counted two at a time", _INFILLING,
             "  while k < int(blank_budget(mask_ratio, seq_len - 2 * k)):\n    k += 1\n",
             "  while k < int(blank_budget(mask_ratio, seq_len - 2 * k)):\n    k += 2\n",
             _SPAN_TABLE),
    Mutation("the most spans a row can need takes 2 / k tokens per span", _INFILLING,
             "  while k < int(blank_budget(mask_ratio, seq_len - 2 * k)):",
             "  while k < int(blank_budget(mask_ratio, seq_len - 2 / k)):", _SPAN_TABLE),
    Mutation("an unused span slot marks the row's last position as a mask", _INFILLING,
             "  kind[rows, np.where(valid, mask_pos, T + 1)] = 1",
             "  kind[rows, np.where(valid, mask_pos, T - 1)] = 1",
             ("tests/test_pipeline_objectives.py::test_objectives_mix_per_row_in_their_configured_"
              "shares",)),
    Mutation("a row that has filled its last blank is not done and generates on", _DECODING,
             "    done = done | (blank >= prompts.num_blanks)",
             "    done = done | (blank > prompts.num_blanks)",
             (_STOPS + "test_a_row_that_has_filled_its_blanks_writes_nothing_more_while_longer_"
              "rows_go_on",)),
    Mutation("the decoding loop runs every step of the bucket whether or not its rows are done",
             _DECODING, "    return (carry[0] < steps) & ~jnp.all(carry[6])",
             "    return carry[0] < steps",
             (_STOPS + "test_the_decoding_loop_stops_when_every_row_has_filled_its_blanks",)),
    Mutation("the checksum of a bfloat16 parameter has no word to read it as",
             "glmjax/checksums.py",
             "    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}",
             "    unsigned = {1: jnp.uint8, 3: jnp.uint16, 4: jnp.uint32}",
             ("tests/test_checkpoint_damage.py::test_parameters_of_one_or_two_bytes_get_a_"
              "checksum_that_sees_one_changed_element",)),
    Mutation("a blank row's last two text tokens are never masked", "glmjax/data/pipeline.py",
             "  last = np.minimum(first + piece_avail, np.asarray(text_len)[:, None] - 1)",
             "  last = np.minimum(first + piece_avail, np.asarray(text_len)[:, None] - 2)",
             ("tests/test_pipeline.py::test_blank_rows_keep_the_contract_and_decode_to_their_"
              "text",)),
    Mutation("a sentence window cuts back past a sentence that ends on its room's last token",
             "glmjax/data/sentences.py",
             "      cut = last_stop[row_index, np.maximum(text_len - 1, 0)]",
             "      cut = last_stop[row_index, np.maximum(text_len - 2, 0)]",
             ("tests/test_infilling.py::test_sentence_windows_keep_a_row_whole_when_no_sentence_"
              "ends_inside_its_room_or_one_ends_it",)),
    Mutation("a step's shared draws use row 1's key", "glmjax/data/pipeline.py",
             "BATCH_KEY = -1  # the RowRandom key", "BATCH_KEY = +1  # the RowRandom key",
             _STREAMS),
    Mutation("a long first document's offset is drawn by the next document's length",
             "glmjax/data/pipeline.py",
             "      long_first = avail[:, 0] + 2 > window_len[:, 0]",
             "      long_first = avail[:, 1] + 2 > window_len[:, 0]",
             ("tests/test_row_draws.py::test_a_long_document_followed_by_short_ones_is_read_"
              "from_anywhere_in_it",)),
    Mutation("a single process agrees on its snapshot's layout with a collective",
             "glmjax/host_copy.py",
             "  if jax.process_count() > 1:\n    ok = bool(np.min(",
             "  if jax.process_count() > 0:\n    ok = bool(np.min(",
             ("tests/test_save_costs.py::test_a_single_process_hands_its_host_copy_to_orbax_"
              "without_a_collective",)),
    Mutation("a prepared store reads past a document's end into the next",
             "glmjax/data/documents.py",
             "    if np.any(starts + lengths > self.doc_lengths[doc_ids]):",
             "    if np.any(starts - lengths > self.doc_lengths[doc_ids]):",
             ("tests/test_data_inputs.py::test_a_store_refuses_offsets_and_reads_that_reach_"
              "outside_its_documents",)),
    Mutation("the checksum of a one-byte array has no word to read it as",
             "glmjax/checksums.py",
             "    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}",
             "    unsigned = {2: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}",
             ("tests/test_checkpoint_damage.py::test_parameters_of_one_or_two_bytes_get_a_"
              "checksum_that_sees_one_changed_element",)),
    Mutation("the default mesh splits heads over two devices", "glmjax/config.py",
             "      tensor=1,                    # devices that split heads",
             "      tensor=2,                    # devices that split heads",
             ("tests/test_parallel.py::test_the_default_mesh_is_data_parallel_over_any_number_of_"
              "devices",)),
)
