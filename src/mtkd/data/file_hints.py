"""What a file that is not what the schema reads looks like, and the command that fixes it:
compressed bytes, another delimiter. Readers and the word-vector loader share these."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from mtkd.errors import DataError

_BINARY = ((b"PAR1", "a Parquet file: set `format: parquet` in the schema"),
           (b"PK\x03\x04", "a zip archive (an .xlsx workbook is one): unzip it, or save the sheet as CSV"))

COMPRESSED = ((b"\x1f\x8b", "gzip", ".gz"), (b"BZh", "bzip2", ".bz2"),
              (b"\xfd7zXZ", "xz", ".xz"), (b"\x28\xb5\x2f\xfd", "zstd", ".zst"))


def decompress_hint(path: Path, kind: str, suffix: str) -> str:
    """The command that decompresses `path` keeping it: `gunzip -k` wants the .gz suffix, so a
    compressed file under another name gets `gzip -dc PATH > NEW` instead."""
    if kind == "zip":
        return f"unzip {path}"
    if path.suffix == suffix:
        return f"{kind} -dk {path}"
    return f"{kind} -dc {path} > {path.with_name(path.stem + '.plain' + path.suffix)}"


def check_not_compressed(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(6)
    for sig, kind, suffix in COMPRESSED:
        if magic.startswith(sig):
            raise DataError(f"{path}: is {kind}-compressed; decompress it first "
                            f"(`{decompress_hint(path, kind, suffix)}`) and give the decompressed file")


def other_delimiter(columns: list[str], delimiter: str) -> str | None:
    """A header read as one column that another delimiter splits is a file in another format
    (a TSV given to a CSV model), not a schema with wrong names."""
    d = next((d for d in "\t,;|" if d != delimiter and len(columns) == 1 and d in columns[0]), None)
    yaml_text = d and d.encode("unicode_escape").decode()  # "\t": a tab as YAML reads it
    return d and (f"The file looks separated by {d!r}, the schema reads {delimiter!r}: give a file in the schema's "
                  f'format (for training data, set `delimiter: "{yaml_text}"` or the format in the schema).')


def look_alike(missing: list[str], names: list[str]) -> str:
    """A missing column that a file column matches but for case, surrounding spaces or Unicode
    normalisation (an accent typed as one character or as a letter plus a combining mark): the
    two print the same, so both are shown escaped, with what differs."""
    def key(x: str) -> str:
        return unicodedata.normalize("NFKC", x).strip().casefold()

    for m in missing:
        for n in names:
            if n != m and key(n) == key(m):
                nfc = unicodedata.normalize("NFC", n) == unicodedata.normalize("NFC", m)
                why = ("Unicode normalisation (the same letters, composed differently)" if nfc else
                       "surrounding spaces" if n.strip() == m.strip() else "case or the form of its characters")
                return f" The file's {ascii(n)} is the schema's {ascii(m)} but for {why}: rename one to the other."
    return ""


def preview(names: list[str], k: int = 12) -> str:
    shown = ", ".join(names[:k])
    return shown + (f", ... ({len(names)} in all)" if len(names) > k else "")


def check_text_line(path: Path, first: bytes) -> None:
    """A delimited file's first line (up to its newline) is text with Unix or Windows line ends;
    binary bytes or old-Mac CR-only line ends (Excel's "CSV (Macintosh)") are named with their fix
    before a parser reports them as a header of garbage or a traceback."""
    for sig, what in _BINARY:
        if first.startswith(sig):
            raise DataError(f"{path}: is {what}")
    if b"\0" in first:
        raise DataError(f"{path}: is not a text file (NUL bytes in line 1; UTF-16 text or binary data?); "
                        f"give a UTF-8 CSV/TSV (UTF-16: `iconv -f UTF-16 -t UTF-8 {path} > {path}.utf8`)")
    if b"\r" in first.rstrip(b"\r\n"):
        raise DataError(f"{path}: has old-Mac line ends (CR without LF); convert them: "
                        f"`tr '\\r' '\\n' < {path} > {path.with_name(path.stem + '.unix' + path.suffix)}`")


def data_as_header(names: list[str], scoring: bool = False) -> str | None:
    """A header of numbers and blanks is a data row: the file has no header line."""
    def number(x: str) -> bool:
        try:
            float(x)
            return True
        except ValueError:
            return not x.strip()
    if names and sum(map(number, names)) * 2 >= len(names):
        if scoring:
            return "Line 1 looks like a data row, not a header: give the file the training files' header line."
        return ("Line 1 looks like a data row, not a header: for a file without a header set `header: false` "
                "and list the names in `columns:` in the schema.")
    return None
