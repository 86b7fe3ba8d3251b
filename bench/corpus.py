"""Real, offline text corpora for the embedding benchmarks.

Random vectors make ANN indexes look better (or worse) than they are: real
sentence embeddings are clustered and anisotropic. This module mixes real
English text that is already on the machine, with no network access:

* docstrings of Python modules, classes and functions
  (``peregrine.demo_corpus``, the demo's own source);
* Debian package descriptions from apt's index files under
  ``/var/lib/apt/lists`` (``Packages`` and, when present, ``Translation-en``).

Every function returns texts in a deterministic order for a given machine
state, deduplicated and whitespace-normalised. The content depends on what is
installed, so benchmarks cache the texts they embedded (see ``dataset.py``)
rather than assume another machine yields the same list.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from peregrine.demo_corpus import (
    MAX_CHARS,
    MIN_CHARS,
    looks_like_prose,
    normalise,
    python_docstrings,
    unique,
)

#: Where apt keeps its downloaded index files.
APT_LISTS_DIR = Path("/var/lib/apt/lists")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences on terminal punctuation followed by a capital.

    Deliberately simple (no NLP dependency); good enough to turn one long
    description into several shorter real texts when a corpus must grow.
    """
    return [s.strip() for s in _SENTENCE_SPLIT.split(text) if s.strip()]



# --------------------------------------------------------------------------
# Debian package descriptions
# --------------------------------------------------------------------------


def _read_index(path: Path) -> str | None:
    """Return the text of one apt index file, decompressing as needed.

    apt may store lists compressed with lz4 or zstd, for which Python has no
    stdlib codec; those go through the ``lz4cat``/``zstdcat`` tools or apt's
    own ``apt-helper cat-file``. Returns None when no decoder is available.
    """
    name = path.name
    suffix = next(
        (ext for ext in (".gz", ".xz", ".lzma", ".bz2", ".lz4", ".zst") if name.endswith(ext)), ""
    )
    try:
        if suffix == ".gz":
            return gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
        if suffix in (".xz", ".lzma"):
            return lzma.decompress(path.read_bytes()).decode("utf-8", "replace")
        if suffix == ".bz2":
            return bz2.decompress(path.read_bytes()).decode("utf-8", "replace")
        if not suffix:
            return path.read_text(encoding="utf-8", errors="replace")
        tool = {".lz4": "lz4cat", ".zst": "zstdcat"}.get(suffix)
        commands: list[list[str]] = []
        if tool and shutil.which(tool):
            commands.append([tool, str(path)])
        helper = Path("/usr/lib/apt/apt-helper")
        if helper.is_file():
            commands.append([str(helper), "cat-file", str(path)])
        for cmd in commands:
            proc = subprocess.run(cmd, capture_output=True, check=False, timeout=300)
            if proc.returncode == 0:
                return proc.stdout.decode("utf-8", "replace")
    except (OSError, EOFError, lzma.LZMAError, subprocess.SubprocessError):
        return None
    return None


def _index_files(lists_dir: Path) -> list[Path]:
    """Packages files first (short descriptions), then Translation-en files.

    Sorted by name for determinism; ``.diff`` directories and partial
    downloads are ignored.
    """
    if not lists_dir.is_dir():
        return []
    files = [p for p in lists_dir.iterdir() if p.is_file() and ".diff" not in p.name]
    packages = sorted(p for p in files if "_Packages" in p.name)
    translations = sorted(p for p in files if "_i18n_Translation-en" in p.name)
    return packages + translations


def _descriptions_in(text: str) -> Iterator[tuple[str, list[str]]]:
    """Yield (short description, long-description paragraphs) per stanza.

    In Packages files the long text usually lives in Translation-en, keyed by
    Description-md5; both use the same continuation-line syntax, where a line
    holding only " ." separates paragraphs.
    """
    for stanza in text.split("\n\n"):
        short: str | None = None
        paragraphs: list[str] = []
        current: list[str] = []
        in_desc = False
        for line in stanza.split("\n"):
            if line.startswith(("Description:", "Description-en:")):
                short = line.split(":", 1)[1].strip()
                in_desc = True
                continue
            if not in_desc:
                continue
            if not line.startswith((" ", "\t")):
                in_desc = False
                continue
            body = line[1:]
            if body.strip() == ".":
                if current:
                    paragraphs.append(" ".join(current))
                    current = []
            elif body.startswith(" "):
                # Verbatim line (lists, code); keep as part of the paragraph.
                current.append(body.strip())
            else:
                current.append(body.strip())
        if current:
            paragraphs.append(" ".join(current))
        if short:
            yield short, paragraphs


def debian_descriptions(
    limit: int | None = None,
    *,
    lists_dir: Path = APT_LISTS_DIR,
    include_long: bool = True,
    min_chars: int = MIN_CHARS,
    max_chars: int = MAX_CHARS,
) -> list[str]:
    """Debian package descriptions from apt's local index files.

    Short descriptions ("fast, scalable, distributed revision control
    system") come first, then each paragraph of the long descriptions when
    ``include_long``. Long descriptions are only present if apt downloaded
    Translation-en (``apt-get update -o Acquire::Languages=en``); Docker
    images often disable that. Returns [] when there are no lists at all,
    e.g. on non-Debian systems, instead of failing.
    """
    shorts: list[str] = []
    longs: list[str] = []
    for path in _index_files(lists_dir):
        text = _read_index(path)
        if text is None:
            continue
        for short, paragraphs in _descriptions_in(text):
            shorts.append(normalise(short))
            if include_long:
                longs.extend(normalise(p) for p in paragraphs)

    def generate() -> Iterator[str]:
        for text in shorts + longs:
            if looks_like_prose(text, min_chars, max_chars):
                yield text

    return unique(generate(), limit)


# --------------------------------------------------------------------------
# Combined corpus
# --------------------------------------------------------------------------


def real_text_corpus(n: int, *, seed: int = 0) -> list[str]:
    """Return ``n`` unique real texts, mixing docstrings and Debian descriptions.

    Sources are added in tiers and only as far as needed to reach ``n``:

    1. first paragraphs of docstrings, Debian short and long descriptions;
    2. later docstring paragraphs;
    3. sentences split out of tier 1 and 2 texts that are longer than one
       sentence (still real text, just shorter).

    The selected pool is shuffled with ``random.Random(seed)`` so that the
    first and last texts come from the same mix of sources (callers slice it
    into base and held-out query sets). Raises ValueError when the machine
    does not have ``n`` unique texts, stating how many it has.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    pool: list[str] = []
    seen: set[str] = set()

    def add(texts: Iterable[str]) -> None:
        for text in texts:
            if text not in seen:
                seen.add(text)
                pool.append(text)

    add(python_docstrings())
    add(debian_descriptions())
    if len(pool) < n:
        add(python_docstrings(first_paragraph_only=False))
    if len(pool) < n:
        base = list(pool)
        for text in base:
            sentences = split_sentences(text)
            if len(sentences) > 1:
                add(s for s in sentences if looks_like_prose(s, MIN_CHARS, MAX_CHARS))
            if len(pool) >= n:
                break
    if len(pool) < n:
        raise ValueError(
            f"only {len(pool)} unique real texts available on this machine, {n} requested"
        )
    rng = random.Random(seed)
    rng.shuffle(pool)
    return pool[:n]


def _main(argv: Sequence[str]) -> int:
    """Print how many unique texts each source yields (``python -m``)."""
    del argv
    docs_first = python_docstrings()
    docs_all = python_docstrings(first_paragraph_only=False)
    deb_short = debian_descriptions(include_long=False)
    deb_all = debian_descriptions()
    print(f"python docstrings, first paragraph: {len(docs_first)}")
    print(f"python docstrings, all paragraphs:  {len(docs_all)}")
    print(f"debian short descriptions:          {len(deb_short)}")
    print(f"debian short + long paragraphs:     {len(deb_all)}")
    print(f"union tier 1:                       {len(set(docs_first) | set(deb_all))}")
    print(f"union tier 1+2:                     {len(set(docs_all) | set(deb_all))}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
