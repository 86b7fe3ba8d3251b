"""Real, offline text corpora for embedding benchmarks.

Random vectors make ANN indexes look better (or worse) than they are: real
sentence embeddings are clustered and anisotropic. This module collects real
English text that is already on the machine, with no network access:

* docstrings of Python modules, classes and functions, read with :mod:`ast`
  (the code is never imported or executed) from the stdlib and site-packages;
* Debian package descriptions from apt's index files under
  ``/var/lib/apt/lists`` (``Packages`` and, when present, ``Translation-en``).

Every function returns texts in a deterministic order for a given machine
state, deduplicated and whitespace-normalised. The content depends on what is
installed, so benchmarks should cache the texts they embedded (see
``bench/dataset.py``) rather than assume another machine yields the same list.
"""

from __future__ import annotations

import ast
import bz2
import gzip
import inspect
import lzma
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

__all__ = [
    "APT_LISTS_DIR",
    "MAX_CHARS",
    "MIN_CHARS",
    "debian_descriptions",
    "python_docstrings",
    "python_source_roots",
    "real_text_corpus",
    "split_sentences",
]

#: Shorter texts are mostly noise ("Return x.", "TODO"); longer ones get
#: truncated by the 256-token model window anyway and slow embedding down.
MIN_CHARS = 20
MAX_CHARS = 1000
#: Where apt keeps its downloaded index files.
APT_LISTS_DIR = Path("/var/lib/apt/lists")
#: Source files above this size are generated tables, not prose; skip them.
_MAX_SOURCE_BYTES = 2_000_000

_WS = re.compile(r"\s+")
_PARA_SPLIT = re.compile(r"\n\s*\n")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
_ALPHA = re.compile(r"[A-Za-z]")


def _normalise(text: str) -> str:
    """Collapse runs of whitespace so near-identical texts deduplicate."""
    return _WS.sub(" ", text).strip()


def _looks_like_prose(text: str, min_chars: int, max_chars: int) -> bool:
    """Keep natural-language text of a useful length; drop code and tables.

    Doctest prompts, reST directives and strings that are mostly symbols or
    digits embed into a few dense clusters that no real query would hit.
    """
    if not min_chars <= len(text) <= max_chars:
        return False
    if text.startswith((">>>", "..", "$ ", "#", "|", "+-", "==", "--")):
        return False
    letters = len(_ALPHA.findall(text))
    return letters >= 0.6 * len(text) and " " in text


def _unique(texts: Iterable[str], limit: int | None) -> list[str]:
    """Deduplicate preserving first-seen order, stopping at ``limit``."""
    seen: set[str] = set()
    out: list[str] = []
    for text in texts:
        if text in seen:
            continue
        seen.add(text)
        out.append(text)
        if limit is not None and len(out) >= limit:
            break
    return out


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences on terminal punctuation followed by a capital.

    Deliberately simple (no NLP dependency); good enough to turn one long
    description into several shorter real texts when a corpus must grow.
    """
    return [s.strip() for s in _SENTENCE_SPLIT.split(text) if s.strip()]


# --------------------------------------------------------------------------
# Python docstrings
# --------------------------------------------------------------------------


def python_source_roots() -> list[Path]:
    """Directories scanned for ``.py`` files: stdlib, then site-packages.

    Uses the running interpreter's paths, so a virtualenv contributes its own
    site-packages. Duplicates and missing directories are dropped.
    """
    paths = sysconfig.get_paths()
    candidates = [paths.get("stdlib"), paths.get("purelib"), paths.get("platlib")]
    roots: list[Path] = []
    for cand in candidates:
        if not cand:
            continue
        root = Path(cand).resolve()
        if root.is_dir() and root not in roots:
            roots.append(root)
    return roots


def _iter_py_files(roots: Sequence[Path]) -> Iterator[Path]:
    """Yield .py files under each root in sorted order, each file once.

    Stdlib contains site-packages in some layouts, so files already seen under
    an earlier root are skipped, and site-packages is skipped when walking the
    stdlib (it is walked as its own root).
    """
    seen: set[Path] = set()
    skip_dirs = {"__pycache__", "site-packages", "dist-packages"}
    for root in roots:
        files: list[Path] = []
        for path in root.rglob("*.py"):
            rel = path.relative_to(root)
            if any(part in skip_dirs for part in rel.parts[:-1]):
                continue
            files.append(path)
        for path in sorted(files):
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            yield path


_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _docstrings_of(source: str) -> Iterator[str]:
    """Yield raw docstrings of the module and every class and function in it.

    Walks statement bodies only (``body``/``orelse``/``finalbody``/handlers)
    instead of :func:`ast.walk`: docstring-bearing nodes never sit inside
    expressions, and skipping expression trees makes this about 3x faster.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences etc.
        tree = ast.parse(source)
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, _DOC_NODES):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield doc
        children: list[ast.AST] = []
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            value = getattr(node, field, None)
            if isinstance(value, list):
                children.extend(v for v in value if isinstance(v, ast.AST))
        stack.extend(reversed(children))


def _docstring_paragraphs(doc: str, first_paragraph_only: bool) -> Iterator[str]:
    """Split a docstring into prose paragraphs, stopping at section headers.

    Numpy/Google style sections ("Parameters", "Args:") are lists of names,
    not prose, so everything from the first such header on is dropped.
    """
    paragraphs = _PARA_SPLIT.split(inspect.cleandoc(doc))
    for i, para in enumerate(paragraphs):
        first_line = para.strip().split("\n", 1)[0].strip()
        lines = para.strip().split("\n")
        if len(lines) > 1 and set(lines[1].strip()) <= {"-", "="} and lines[1].strip():
            break  # numpy-style "Parameters\n----------"
        if (
            first_line.endswith(":")
            and first_line[:-1].strip().istitle()
            and len(first_line) < 30
            and i > 0
        ):
            break  # google-style "Args:" / "Returns:"
        yield _normalise(para)
        if first_paragraph_only:
            break


def python_docstrings(
    limit: int | None = None,
    *,
    roots: Sequence[Path] | None = None,
    first_paragraph_only: bool = True,
    min_chars: int = MIN_CHARS,
    max_chars: int = MAX_CHARS,
) -> list[str]:
    """Docstrings (by default their first paragraph) from installed Python code.

    Files are parsed with :mod:`ast` and never imported, so this is safe on
    any installed package and has no side effects. Files that do not parse
    (Python 2 leftovers, templates) are skipped. Order is stdlib first, then
    site-packages, files sorted by path, nodes in source order.
    """

    def generate() -> Iterator[str]:
        for path in _iter_py_files(roots if roots is not None else python_source_roots()):
            try:
                if path.stat().st_size > _MAX_SOURCE_BYTES:
                    continue
                source = path.read_text(encoding="utf-8", errors="replace")
                docs = list(_docstrings_of(source))
            except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
                continue
            for doc in docs:
                for para in _docstring_paragraphs(doc, first_paragraph_only):
                    if _looks_like_prose(para, min_chars, max_chars):
                        yield para

    return _unique(generate(), limit)


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
            shorts.append(_normalise(short))
            if include_long:
                longs.extend(_normalise(p) for p in paragraphs)

    def generate() -> Iterator[str]:
        for text in shorts + longs:
            if _looks_like_prose(text, min_chars, max_chars):
                yield text

    return _unique(generate(), limit)


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
                add(s for s in sentences if _looks_like_prose(s, MIN_CHARS, MAX_CHARS))
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
