"""Splitting sequence (text) values into tokens, over a whole Arrow column at once.

How whitespace is read is recorded per sequence feature in encoder.json (`whitespace`), because
an encoder must keep tokenising new rows (predict, serve) exactly as its training data was:

- "unicode" (encoders fitted since mtkd records the key): with `separator: " "` any run of
  Unicode whitespace (tab, newline, no-break space, ideographic space, ... the characters of
  Python's `str.isspace`) separates tokens; with any separator, whitespace is never a
  punctuation token of its own.
- "literal" (an encoder.json without the key): the separator alone splits, so "a\\tb" is one
  token, and a non-ASCII space (U+00A0) is a punctuation mark under `split_punctuation`.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

WHITESPACE_MODES = ("unicode", "literal")
NEW_WHITESPACE = "unicode"  # what a newly fitted encoder records
OLD_WHITESPACE = "literal"  # what an encoder.json without `whitespace` was fitted with

# RE2's \s is ASCII only ([\t\n\f\r ]); this class is exactly Python's str.isspace, which is also
# what Arrow's utf8_split_whitespace splits on
_SPACE = r"\s\v\x{1c}-\x{1f}\x{85}\p{Z}"
# one character that is not a letter, digit, combining mark, underscore or space (RE2, Unicode
# classes: "café." -> café .); each becomes a token, so "isn't." -> isn ' t .
_PUNCT = {"unicode": rf"([^\p{{L}}\p{{N}}\p{{M}}_{_SPACE}])", "literal": r"([^\p{L}\p{N}\p{M}_\s])"}


def split_tokens(col: pa.Array, separator: str, lowercase: bool = False, split_punctuation: bool = False,
                 whitespace: str = NEW_WHITESPACE) -> pa.Array:
    """List array of the tokens of each sequence string (empty tokens included; callers drop them).

    Lower-casing first, then spaces put around each punctuation mark (so "Iraq." and "Iraq" are
    one word) when `split_punctuation` is set, then the split.
    """
    if whitespace not in WHITESPACE_MODES:
        raise ValueError(f"whitespace {whitespace!r} is not one of {WHITESPACE_MODES}")
    col = pc.fill_null(col, "")
    if lowercase:
        col = pc.utf8_lower(col)
    runs = whitespace == "unicode" and separator == " "  # any run of whitespace is one separator
    if split_punctuation:
        sep = " " if runs else separator
        col = pc.replace_substring_regex(col, _PUNCT[whitespace], f"{sep}\\1{sep}")
    if runs:
        return pc.utf8_split_whitespace(col)
    return pc.split_pattern(col, separator)
