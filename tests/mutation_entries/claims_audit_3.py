"""Planted bugs of the third claims audit: the tokenizer trainer, [sMASK] sentences and the
recipe, bench, logs, the GPU AOT and XLA options, device snapshots' parts and TPU slices."""
from mutation_entries import Mutation

_TRAINER = "tests/test_tokenizer_trainer.py::"
_TEXT_FIELD = (_TRAINER + "test_the_trainer_reads_the_json_field_text_field_names_and_says_that_"
               "flag_when_missing",)
_T = "glmjax/data/tokenizer_train.py"

ENTRIES: tuple[Mutation, ...] = (
    # The tokenizer trainer: --text_field (and --text-field) read, its errors in its own flags.
    Mutation("the tokenizer trainer reads the 'text' field whatever --text_field says", _T,
             "args.out, args.model_type, args.text_field,", 'args.out, args.model_type, "text",',
             _TEXT_FIELD),
    Mutation("the tokenizer trainer drops the first spelling --text-field", _T,
             '"--text_field", "--text-field",', '"--text_field",', _TEXT_FIELD),
    Mutation("the tokenizer trainer's errors name train's config fields, not its flags", _T,
             "      message = message.replace(field, flag)\n", "      pass\n", _TEXT_FIELD),
    Mutation("the tokenizer trainer feeds a line past SentencePiece's limit whole", _T,
             "for start in range(0, len(line), _MAX_LINE_CHARS):",
             "for start in range(0, 1 if line else 0):",
             (_TRAINER + "test_the_trainer_cuts_a_line_sentencepiece_would_skip_into_lines_it_"
              "reads",)),
)
