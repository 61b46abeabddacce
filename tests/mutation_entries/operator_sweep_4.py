"""Planted bugs from session 43's short sweep of the modules no earlier sweep drew (paths, the
bench and convert commands' entry points): a workdir taken for a bucket because its path holds
':' or '//' somewhere, and a URL other than gs:// taken for a local folder."""
from mutation_entries import Mutation

_REMOTE = ("tests/test_workdir.py::test_a_local_folder_with_a_colon_or_a_double_slash_is_locked_"
           "and_a_url_of_any_scheme_is_not",)
_IS_REMOTE = '  return "://" in path\n'

ENTRIES = (
    Mutation("a path holding ':' anywhere is taken for a bucket", "glmjax/paths.py", _IS_REMOTE,
             '  return ":" in path\n', _REMOTE),
    Mutation("a path holding '//' anywhere is taken for a bucket", "glmjax/paths.py", _IS_REMOTE,
             '  return "//" in path\n', _REMOTE),
    Mutation("only gs:// is a bucket: s3:// is taken for a local folder", "glmjax/paths.py",
             _IS_REMOTE, '  return path.startswith("gs://")\n', _REMOTE),
)
