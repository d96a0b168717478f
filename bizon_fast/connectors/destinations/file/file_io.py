"""Naming and copying of the ``file`` destination's output files, shared by its batch and stream modes.

Both modes (``file.py`` and ``file_stream.py``) name a json target the same way and append staged parts to
it the same way. These helpers live here, apart from either mode, so that ``file.py`` can import its stream
mode without ``file_stream.py`` importing ``file.py`` back.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import BinaryIO

JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
#: copy_file_range moves at most this many bytes per call (the kernel caps a call near 2 GiB anyway)
COPY_CHUNK = 1 << 30


def json_target(destination_id: str) -> str:
    """bizon appends ``.json`` unconditionally (``out.jsonl`` -> ``out.jsonl.json``); we don't double it."""
    return destination_id if destination_id.lower().endswith(JSON_SUFFIXES) else f"{destination_id}.json"


def append_file(out: BinaryIO, src: Path) -> None:
    """Append ``src`` to ``out`` in the kernel (copy_file_range) when it can, else through a buffer."""
    out.flush()
    with open(src, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        copied = 0
        try:
            while copied < size:
                n = os.copy_file_range(f.fileno(), out.fileno(), min(size - copied, COPY_CHUNK))
                if n == 0:
                    break
                copied += n
        except OSError:
            if copied:
                raise
        if copied < size:
            f.seek(copied)
            out.seek(0, os.SEEK_END)
            shutil.copyfileobj(f, out, 1 << 20)
