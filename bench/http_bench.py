"""Entry point of the HTTP search benchmark; the code is the package bench/httpbench/.

    .venv/bin/python bench/http_bench.py --help

A run starts its workers, helper servers and loaders with this same script
(subcommands ``_worker``, ``_floor_server``, ``_build``, ``_chroma_load``), under
``.venv-peers/bin/python`` for everything talking to Chroma: nothing imported here
may need more than the standard library and numpy at module level.
"""

from __future__ import annotations

import sys

# bench/ is sys.path[0] when this runs as a script, so the package and its sibling
# modules (cpu_pinning, dataset) import as top-level names.
from httpbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
