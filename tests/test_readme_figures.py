"""README.md's benchmark figures are those of the committed results.

``bench/readme_figures.py`` renders the block between ``<!-- figures:begin ... -->``
and ``<!-- figures:end -->`` from bench/results/http_bench.json and
bench/results/vector_bench.json; ``--check`` compares it with README.md. It runs
as a subprocess (it imports its bench/ siblings as top-level modules) and reads
only those JSON files: no network, server or embedding model.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "readme_figures.py"


def _check(readme: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--check", "--readme", str(readme)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)


def test_readme_figures_match_committed_results() -> None:
    proc = _check(ROOT / "README.md")
    assert proc.returncode == 0, proc.stderr


def test_check_fails_on_a_hand_edited_figure(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    start = text.index("<!-- figures:begin")
    end = text.index("<!-- figures:end -->")
    block = text[start:end]
    edited = block.replace("HTTP figures,", "HTTP figures (hand-edited),", 1)
    assert edited != block
    readme = tmp_path / "README.md"
    readme.write_text(text[:start] + edited + text[end:])
    proc = _check(readme)
    assert proc.returncode == 1
    assert "differ" in proc.stderr
