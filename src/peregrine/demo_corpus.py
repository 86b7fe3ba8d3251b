"""Real English text that every machine has: docstrings of installed Python code.

The demo (``peregrine demo``, ``peregrine serve --demo``) embeds these so that
its searches are over real, clustered sentence embeddings rather than random
vectors, with no download. Files are parsed with :mod:`ast`, never imported.
The benchmarks' larger corpus (``bench/corpus.py``) adds Debian package
descriptions and reuses the prose filter below.
"""

from __future__ import annotations

import ast
import inspect
import re
import sysconfig
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

__all__ = [
    "MAX_CHARS",
    "MIN_CHARS",
    "looks_like_prose",
    "normalise",
    "python_docstrings",
    "python_source_roots",
    "unique",
]

#: Shorter texts are mostly noise ("Return x.", "TODO"); longer ones get
#: truncated by the 256-token model window anyway and slow embedding down.
MIN_CHARS = 20
MAX_CHARS = 1000
#: Source files above this size are generated tables, not prose; skip them.
_MAX_SOURCE_BYTES = 2_000_000

_WS = re.compile(r"\s+")
_PARA_SPLIT = re.compile(r"\n\s*\n")
_ALPHA = re.compile(r"[A-Za-z]")


def normalise(text: str) -> str:
    """Collapse runs of whitespace so near-identical texts deduplicate."""
    return _WS.sub(" ", text).strip()


def looks_like_prose(text: str, min_chars: int, max_chars: int) -> bool:
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


def unique(texts: Iterable[str], limit: int | None) -> list[str]:
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
        yield normalise(para)
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
                    if looks_like_prose(para, min_chars, max_chars):
                        yield para

    return unique(generate(), limit)
