"""What a file that is not what the schema reads looks like, and the command that fixes it:
compressed bytes, another delimiter. Readers and the word-vector loader share these."""

from __future__ import annotations

from pathlib import Path

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


def other_delimiter(columns: list[str], delimiter: str) -> str | None:
    """A header read as one column that another delimiter splits is a file in another format
    (a TSV given to a CSV model), not a schema with wrong names."""
    d = next((d for d in "\t,;|" if d != delimiter and len(columns) == 1 and d in columns[0]), None)
    yaml_text = d and d.encode("unicode_escape").decode()  # "\t": a tab as YAML reads it
    return d and (f"The file looks separated by {d!r}, the schema reads {delimiter!r}: give a file in the schema's "
                  f'format (for training data, set `delimiter: "{yaml_text}"` or the format in the schema).')


def preview(names: list[str], k: int = 12) -> str:
    shown = ", ".join(names[:k])
    return shown + (f", ... ({len(names)} in all)" if len(names) > k else "")
