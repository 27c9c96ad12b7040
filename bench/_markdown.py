"""BENCHMARKS.md is written by more than one benchmark: each owns a marked section.

A section is the text between ``<!-- section:NAME -->`` and ``<!-- /section:NAME -->``;
replace_section rewrites that text (or appends the section) and leaves the rest as it was.
"""
from __future__ import annotations

import os
from pathlib import Path


def replace_section(path, name: str, body: str) -> None:
    """Put ``body`` into section ``name`` of the markdown file ``path`` (atomically)."""
    path = Path(path)
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.is_file() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
