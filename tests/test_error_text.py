"""An error in one line: its message's first line, cut, or its type where it has none."""
import pytest

from glmjax import error_text


@pytest.mark.parametrize("message", ["", "   ", "\n\n", " \n \t"])
def test_an_error_without_a_message_is_named_by_its_type(message):
  assert error_text.first_line(RuntimeError(message)) == "RuntimeError"
  assert error_text.typed_line(RuntimeError(message)) == "RuntimeError: "


def test_the_first_line_is_the_first_one_with_text_and_is_cut_at_the_limit():
  error = ValueError("\n  the first line  \nthe second line\n")
  assert error_text.first_line(error) == "the first line"
  assert error_text.typed_line(error) == "ValueError: the first line"
  long = OSError("x" * 500 + "\nmore")
  assert error_text.first_line(long) == "x" * 300  # the default limit
  assert error_text.typed_line(long) == "OSError: " + "x" * 300  # the same default
  assert error_text.typed_line(long, 200) == "OSError: " + "x" * 200
  assert error_text.first_line(long, None) == "x" * 500


def test_terminal_colour_codes_are_left_out():
  error = RuntimeError("\x1b[31mWeights only load failed\x1b[0m: Unsupported global\nmore")
  assert error_text.first_line(error) == "Weights only load failed: Unsupported global"
  bold_red = RuntimeError("\x1b[1;31mboom\x1b[0m (code \x1b[01;33m7\x1b[m)")  # codes with ;
  assert error_text.first_line(bold_red) == "boom (code 7)"
