"""Planted bugs in session 47's work: what session 46 left (apt's lock on a new TPU VM, spans
that piled up at packed documents' starts)."""
from mutation_entries import Mutation

_PLACE = "glmjax/data/span_placement.py"
_TI = "tests/test_infilling.py::"
_ASSIGN = (_TI + "test_spans_go_to_documents_as_the_reference_assigns_them",)
_APT = ("tests/test_launch_tpu_setup.py::test_setup_on_a_new_vm_waits_while_its_first_upgrade_"
        "holds_apt_s_lock",)

ENTRIES = (
    Mutation("setup's apt-get is tried once", "launch/tpu_remote.py",
             '  return (f"apt_get() {{ for try in $(seq {APT_TRIES}); do sudo apt-get -o "',
             '  return (f"apt_get() {{ for try in $(seq 1); do sudo apt-get -o "', _APT),
    Mutation("setup installs Python with a bare apt-get again", "launch/tpu_remote.py",
             'f"if ! command -v {python} >/dev/null; then apt_get update -qq; "',
             'f"if ! command -v {python} >/dev/null; then sudo apt-get update -qq; "', _APT),
    Mutation("apt_get succeeds after its last failed try", "launch/tpu_remote.py",
             "f'times\" >&2; return 1; }}')", "f'times\" >&2; return 0; }}')",
             ("tests/test_launch_tpu_setup.py::test_setup_stops_with_the_apt_command_named_when_"
              "the_lock_is_never_released",)),
    Mutation("a shorter document's budget counts the separators too", _PLACE,
             "np.minimum(budget + separators,", "np.minimum(budget,", _ASSIGN),
    Mutation("a shorter document's budget rounds up", _PLACE,
             "blank_budget(mask_ratio, sizes[:, rank:rank + 1])",
             "np.ceil(mask_ratio * sizes[:, rank:rank + 1]).astype(np.int64)", _ASSIGN),
    Mutation("leftover spans ignore what a document already holds", _PLACE,
             " + 1 - np.take_along_axis(held, order[:, rank:rank + 1], 1))", " + 1)",
             (_TI + "test_spans_the_reference_s_rule_leaves_over_go_where_they_fit_and_a_row_keeps_"
              "one",)),
    Mutation("a later document's spans start at its start plus all earlier spans' units", _PLACE,
             "            - np.take_along_axis(np.cumsum(held, axis=1) - held, segment, axis=1))",
             "            )",
             (_TI + "test_place_spans_multi_document_respects_barriers",
              _TI + "test_no_token_of_a_packed_row_starts_a_span_more_often_than_its_document_s_"
              "others")),
    Mutation("spans are placed along the joined documents again (one document's draws for all)",
             _PLACE, "  key = np.where(valid, segment, count)\n",
             "  key = np.where(valid, 0, count)\n",
             (_TI + "test_place_spans_multi_document_respects_barriers",)),
    Mutation("a shorter document's budget is not capped at its room", _PLACE,
             "give(rank, np.minimum(budget + separators, sizes[:, rank:rank + 1] + 1))",
             "give(rank, budget + separators)",
             (_TI + "test_a_shorter_document_never_takes_more_spans_than_it_holds_whatever_the_"
              "ratio",)),
    Mutation("the data benchmark counts the row's own first place as a document's first",
             "glmjax/bench/data.py", "  first[:, 2:] = tokens[:, 1:-1] == marks.cls",
             "  first[:, 1:] = tokens[:, :-1] == marks.cls",
             ("tests/test_bench_data.py::test_the_data_benchmark_counts_span_starts_at_a_later_"
              "document_s_first_place_and_elsewhere",)),
)
