"""Planted bugs in session 48's work: an import that holds its float32 parameters once."""
from mutation_entries import Mutation

_TM = "tests/test_import_memory.py::"
_ONCE = (_TM + "test_converting_holds_the_float32_parameters_about_once_beside_the_source",)
_SAVE = (_TM + "test_saving_imported_parameters_makes_no_second_copy_of_them_and_later_saves_"
         "still_copy",)

ENTRIES = (
    Mutation("a consuming conversion keeps the source's arrays", "glmjax/convert/mapping.py",
             "take = tensors.pop if consume else tensors.__getitem__",
             "take = tensors.__getitem__",
             _ONCE + (_TM + "test_a_consuming_conversion_gives_the_same_parameters_and_empties_"
                      "the_source",)),
    Mutation("each layer is cast to float32 in a list that is then stacked",
             "glmjax/convert/mapping.py",
             "      if value is None:\n        value = np.empty((count, *layer.shape), dtype)\n"
             "      value[index] = layer\n    _set(stacked, path, value)",
             "      value = [] if value is None else value\n      value.append(layer.astype(dtype))"
             "\n    _set(stacked, path, np.stack(value))", _ONCE),
    Mutation("the import's save lets Orbax copy its numpy arrays", "glmjax/pretrained.py",
             "    with _numpy_leaves_written_in_place():", "    with contextlib.nullcontext():",
             _SAVE),
    Mutation("the import's save leaves the uncopying handler for every later save",
             "glmjax/pretrained.py",
             "    handlers.register_type_handler(np.ndarray, before, override=True)\n", "", _SAVE),
    Mutation("the handler swap is reported to the user as Orbax's warning", "glmjax/pretrained.py",
             '  return not str(record.msg).startswith("Type handler registry type")',
             "  return True", _SAVE),
)
