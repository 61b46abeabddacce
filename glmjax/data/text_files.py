"""Documents from local text files: .txt, .jsonl and .json (JSON Lines), each optionally .gz.

What a document is:
  .jsonl / .json  one JSON object per line; the document is its `data.text_field` string.
  .txt            with data.txt_documents='paragraphs' (default), documents are separated by one
                  or more blank lines (the BERT / Megatron raw-text convention); with 'file', the
                  whole file is one document.
Empty and whitespace-only documents are skipped. Bytes that are not UTF-8 become U+FFFD and are
counted in `TextStats.invalid_utf8`; a file (or byte range) where they are more than
MAX_INVALID_UTF8 of the bytes read is refused, naming it: that is a binary file, not text. Large
uncompressed files can be cut into byte ranges that start at a document boundary, so prepare can
tokenize one big file in parallel.
"""
from __future__ import annotations

import dataclasses
import glob
import gzip
import json
import os
import re
import zlib
from typing import Iterator, Sequence

SUPPORTED_SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz", ".json", ".json.gz")
TXT_DOCUMENTS = ("paragraphs", "file")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # surrogateescape's stand-in for an invalid byte
# Real text with a few stray bytes stays far below this (a web corpus: about 1e-5); a binary
# file renamed to .txt replaces a quarter of its bytes.
MAX_INVALID_UTF8 = 0.01
MIN_JUDGED_BYTES = 4096


@dataclasses.dataclass
class TextStats:
  """Counts reported after reading a source."""
  docs: int = 0
  invalid_utf8: int = 0  # bytes (and lone JSON surrogates) replaced by U+FFFD
  bytes_read: int = 0

  def add(self, other: "TextStats"):
    self.docs += other.docs
    self.invalid_utf8 += other.invalid_utf8
    self.bytes_read += other.bytes_read


def decode_utf8(data: bytes, stats: TextStats) -> str:
  stats.bytes_read += len(data)
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:  # rare: count the invalid bytes, then replace them as usual
    stats.invalid_utf8 += len(_ESCAPED_BYTE.findall(data.decode("utf-8", "surrogateescape")))
    return data.decode("utf-8", errors="replace")


def expand_globs(patterns: Sequence[str], field: str = "data.files") -> list[str]:
  """Files matched by each glob, sorted within a glob, globs in order, each file once; errors
  name `field`, where the globs came from. An entry that matches nothing as given but holds
  commas is read as several globs (`--config.data.files=a.txt,b.txt` gives one string), as
  evaluate's --data_source reads them; a name with a comma in it still matches as itself."""
  if not patterns:
    raise ValueError("data.source='files' needs data.files: globs of .txt/.jsonl/.jsonl.gz files "
                     "(e.g. --config.data.files='corpus/*.jsonl.gz,more/*.txt')")
  paths: list[str] = []
  for entry in patterns:
    split = "," in entry and not _matching_files(entry)
    for pattern in ([glob_.strip() for glob_ in entry.split(",") if glob_.strip()] if split
                    else [entry]):
      _add_matches(pattern, field, paths)
  return paths


def _matching_files(pattern: str) -> list[str]:
  return sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                if os.path.isfile(p))


def _add_matches(pattern: str, field: str, paths: list[str]) -> None:
  """Appends the files `pattern` matches to `paths` (each once); errors name `field`."""
  matched = _matching_files(pattern)
  if not matched and os.path.isdir(os.path.expanduser(pattern)):
    # A folder is a likely first try; "matches no file" would read as if it were empty.
    # The example names the suffix of the files that are there (a folder of .txt, say).
    suffixes = sorted({suffix for name in os.listdir(os.path.expanduser(pattern))
                       for suffix in SUPPORTED_SUFFIXES if name.endswith(suffix)})
    example = os.path.join(pattern, "*" + (suffixes[0] if suffixes else ".jsonl"))
    raise FileNotFoundError(f"{field}: {pattern!r} is a folder; give a glob of its files, "
                            f"e.g. {example!r}")
  if not matched:
    raise FileNotFoundError(f"{field}: {pattern!r} matches no file (working directory "
                            f"{os.getcwd()}); fix the glob or use an absolute path")
  for path in matched:
    if not path.endswith(SUPPORTED_SUFFIXES):
      raise ValueError(f"{field}: {path!r} has an unsupported type; expected one of "
                       f"{SUPPORTED_SUFFIXES} (narrow the glob, e.g. '*.jsonl')")
    if path not in paths:
      paths.append(path)


def _boundary_pattern(path: str, txt_documents: str) -> re.Pattern | None:
  """Bytes after which a new document starts, or None if the file cannot be cut."""
  if path.endswith(".gz") or (path.endswith(".txt") and txt_documents == "file"):
    return None
  return re.compile(rb"\n" if path.endswith((".jsonl", ".json")) else rb"\n[ \t\r\f\v]*\n")


def _next_boundary(path: str, offset: int, pattern: re.Pattern, size: int) -> int:
  """The first document start at or after `offset` (the end of the file if none)."""
  overlap = 256  # a boundary match spanning two reads is found through the overlap
  with open(path, "rb") as f:
    position = max(offset - 1, 0)
    f.seek(position)
    carry = b""
    while True:
      block = f.read(1 << 20)
      if not block:
        return size
      data = carry + block
      base = position - len(carry)
      for match in pattern.finditer(data):
        if base + match.end() >= offset:
          return base + match.end()
      carry = data[-overlap:]
      position += len(block)


def plan_file_pieces(paths: Sequence[str], target_bytes: int, txt_documents: str
                     ) -> list[list[tuple[str, int, int]]]:
  """Work units of about target_bytes: lists of (path, start, end) byte ranges, in corpus order.

  end == -1 reads to the end (compressed files are always read whole).
  """
  ranges: list[tuple[str, int, int, int]] = []  # path, start, end, size
  for path in paths:
    size = os.path.getsize(path)
    pattern = _boundary_pattern(path, txt_documents)
    if pattern is None or size <= target_bytes:
      ranges.append((path, 0, -1, size))
      continue
    cuts = [0]
    while cuts[-1] + target_bytes < size:
      cut = _next_boundary(path, cuts[-1] + target_bytes, pattern, size)
      if cut >= size:
        break
      cuts.append(cut)
    ends = cuts[1:] + [-1]
    ranges.extend((path, s, e, (size if e < 0 else e) - s) for s, e in zip(cuts, ends))
  pieces, current, current_bytes = [], [], 0
  for path, start, end, size in ranges:
    current.append((path, start, end))
    current_bytes += size
    if current_bytes >= target_bytes:
      pieces.append(current)
      current, current_bytes = [], 0
  if current:
    pieces.append(current)
  return pieces


_BOM = b"\xef\xbb\xbf"  # UTF-8's byte-order mark


def _lines(path: str, start: int, end: int) -> Iterator[tuple[int, bytes]]:
  """(byte offset, line) pairs of a range; offsets are into the uncompressed data."""
  try:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
      if start:
        f.seek(start)
      position = start
      for line in f:
        if 0 <= end <= position:
          return
        # A byte-order mark (Windows tools, pandas' utf-8-sig) is not text: json.loads
        # refuses it and a .txt file's first document would start with it.
        yield position, (line[len(_BOM):] if position == 0 and line.startswith(_BOM) else line)
        position += len(line)
  except (OSError, EOFError, zlib.error) as e:  # zlib.error: damaged data inside a .gz
    fix = ("; the file is damaged or cut short: copy or compress it again"
           if isinstance(e, (EOFError, zlib.error, gzip.BadGzipFile)) else "")
    raise ValueError(f"data.files: cannot read {path!r}: {e}{fix}") from e


def _jsonl_texts(path, start, end, text_field, stats) -> Iterator[str]:
  for position, raw in _lines(path, start, end):
    if not raw.strip():
      continue
    where = f"{path} (line at byte {position})"
    try:
      record = json.loads(decode_utf8(raw, stats))
    except json.JSONDecodeError as e:
      raise ValueError(f"data.files: {where} is not JSON ({e}); .jsonl/.json files need one "
                       "JSON object per line") from e
    if not isinstance(record, dict):  # a whole-file JSON array, say: no field name helps
      kind = ("an array" if isinstance(record, list) else "null" if record is None
              else f"a {type(record).__name__}")
      raise ValueError(f"data.files: {where} is {kind}, not a JSON object; .jsonl/.json files "
                       "need one JSON object per line (write a JSON array's elements one a line)")
    if text_field not in record:
      fields = sorted(record)
      raise ValueError(f"data.files: {where} has no field {text_field!r} (it has {fields}); set "
                       f"--config.data.text_field to the field that holds the text")
    text = record[text_field]
    if text is None:
      continue
    if not isinstance(text, str):
      raise ValueError(f"data.files: {where}: field {text_field!r} is a "
                       f"{type(text).__name__}, not a string; set data.text_field to a text field")
    if _SURROGATE.search(text):  # lone \ud800-style escapes cannot be encoded as UTF-8
      stats.invalid_utf8 += len(_SURROGATE.findall(text))
      text = _SURROGATE.sub("\ufffd", text)
    yield text


def _paragraph_texts(path, start, end, stats) -> Iterator[str]:
  paragraph: list[str] = []
  for _, raw in _lines(path, start, end):
    line = decode_utf8(raw, stats).rstrip("\r\n")
    if line.strip():
      paragraph.append(line)
    elif paragraph:
      yield "\n".join(paragraph)
      paragraph = []
  if paragraph:
    yield "\n".join(paragraph)


def iter_range_texts(path: str, start: int, end: int, text_field: str, txt_documents: str,
                     stats: TextStats) -> Iterator[str]:
  """Non-empty documents of one byte range of one file."""
  if txt_documents not in TXT_DOCUMENTS:
    raise ValueError(f"data.txt_documents={txt_documents!r}: expected one of {TXT_DOCUMENTS}")
  invalid_before, bytes_before = stats.invalid_utf8, stats.bytes_read
  for text in _range_texts(path, start, end, text_field, txt_documents, stats):
    _refuse_binary(path, stats.invalid_utf8 - invalid_before, stats.bytes_read - bytes_before)
    yield text
  _refuse_binary(path, stats.invalid_utf8 - invalid_before, stats.bytes_read - bytes_before)


def _refuse_binary(path: str, invalid: int, read: int) -> None:
  """Judged once MIN_JUDGED_BYTES are read: a few bad bytes in a tiny file are not a pattern."""
  if read >= MIN_JUDGED_BYTES and invalid > MAX_INVALID_UTF8 * read:
    raise ValueError(
        f"data.files: {path!r} is not UTF-8 text: {invalid} of the first {read} bytes read "
        f"({invalid / read:.0%}) are not valid UTF-8 (at most {MAX_INVALID_UTF8:.0%} is "
        "accepted); remove it from data.files or convert it to UTF-8.")


def _range_texts(path, start, end, text_field, txt_documents, stats) -> Iterator[str]:
  if path.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
    texts = _jsonl_texts(path, start, end, text_field, stats)
  elif txt_documents == "paragraphs":
    texts = _paragraph_texts(path, start, end, stats)
  else:
    whole = b"".join(line for _, line in _lines(path, 0, -1))
    texts = iter([decode_utf8(whole, stats).replace("\r\n", "\n")])
  for text in texts:
    if text.strip():
      stats.docs += 1
      yield text
