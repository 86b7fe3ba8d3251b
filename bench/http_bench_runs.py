"""One row per HTTP benchmark run: bench/results/http_bench_runs.csv and its page.

The CSV keeps the key figures of each run's summary (when, which commit, p50/p99
per path, overhead, control and Chroma p99, throughput at the top client count vs
Chroma) so that the full JSON of older runs need not stay in the tree; the page,
bench/results/http_bench_runs.md, is rendered from the CSV alone.

    .venv/bin/python bench/http_bench_runs.py REV:bench/results/http_bench.json  # add a run
    .venv/bin/python bench/http_bench_runs.py          # re-render the page from the CSV
    .venv/bin/python bench/http_bench_runs.py --check  # fail if the page is stale

A run is given as a file or as ``REV:PATH`` (read with ``git show``, and recorded
so, with REV shortened to its commit); a row with the same time is replaced.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNS_CSV = ROOT / "bench" / "results" / "http_bench_runs.csv"
RUNS_MD = ROOT / "bench" / "results" / "http_bench_runs.md"
TARGET_P99_MS = 2.0  # as bench/httpbench/common.py

# (column, where in the result JSON, digits); paths are tuples of keys.
_S, _P, _C = ("summary",), ("peregrine_server",), ("chroma_server",)
FIGURES: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("inproc_p50_ms", (*_S, "inproc_p50_ms"), 3),
    ("json_p50_ms", (*_P, "peregrine-json", "latency", "p50_ms"), 3),
    ("json_p99_ms", (*_P, "peregrine-json", "latency", "p99_ms"), 3),
    ("json_overhead_ms", (*_S, "paths", "peregrine-json", "overhead_p50_ms"), 3),
    ("msgpack_p50_ms", (*_P, "peregrine-msgpack", "latency", "p50_ms"), 3),
    ("msgpack_p99_ms", (*_P, "peregrine-msgpack", "latency", "p99_ms"), 3),
    ("msgpack_overhead_ms", (*_S, "paths", "peregrine-msgpack", "overhead_p50_ms"), 3),
    ("json_p99_pinned_ms", (*_P, "peregrine-json+pinned", "latency", "p99_ms"), 3),
    ("msgpack_p99_pinned_ms", (*_P, "peregrine-msgpack+pinned", "latency", "p99_ms"), 3),
    ("json_p99_idlepoll_ms", (*_P, "peregrine-json+idlepoll", "latency", "p99_ms"), 3),
    ("msgpack_p99_idlepoll_ms", (*_P, "peregrine-msgpack+idlepoll", "latency", "p99_ms"), 3),
    ("control_p99_ms", (*_S, "floor", "p99_ms"), 3),
    ("control_p99_pinned_ms", (*_S, "floor_pinned", "p99_ms"), 3),
    ("control_p99_idlepoll_ms", (*_S, "floor_idlepoll", "p99_ms"), 3),
    ("chroma_p50_ms", (*_C, "chroma", "latency", "p50_ms"), 3),
    ("chroma_p99_ms", (*_C, "chroma", "latency", "p99_ms"), 3),
    ("chroma_p99_pinned_ms", (*_C, "chroma+pinned", "latency", "p99_ms"), 3),
    ("chroma_p99_idlepoll_ms", (*_C, "chroma+idlepoll", "latency", "p99_ms"), 3),
    ("json_rps_top", (*_S, "paths", "peregrine-json", "rps_top"), 1),
    ("msgpack_rps_top", (*_S, "paths", "peregrine-msgpack", "rps_top"), 1),
    ("chroma_rps_top", (*_S, "chroma_rps_top"), 1),
    ("json_vs_chroma_top", (*_S, "paths", "peregrine-json", "vs_chroma"), 2),
    ("msgpack_vs_chroma_top", (*_S, "paths", "peregrine-msgpack", "vs_chroma"), 2),
)
COLUMNS = ("time_utc", "commit", "src_clean", "source", "n", "top_clients",
           *(name for name, _, _ in FIGURES))

# What each measured commit's search path was; a run on another commit gets a section
# named after its commit. Descriptions state the code, not how it came about.
GROUPS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Float32 graphs, no pinned rows", ("136d6bc", "c1be469"),
     "Sealed segments with an integer id column, no regrouping of single-segment hits "
     "and a per-segment tombstone counter; c1be469 adds only results to 136d6bc."),
    ("Float32 graphs, pinned rows", ("1be17b5", "6412056", "2393a84"),
     "The same search path; the bench has pinned rows from 1be17b5. 2393a84 adds one check per "
     "sealed search: an unfiltered HNSW walk that returns fewer than k nodes falls back "
     "to the exact scan."),
    ("Float16 graph codes", ("51f4759", "52b2eae", "c2974bd"),
     "Sealed segments walk float16 codes and rescore the k hits exactly from the float32 "
     "rows (51f4759); 52b2eae changes only the build-time float16 range check, c2974bd "
     "only the bench report. A separate side-by-side check of two servers on the same "
     "graph, float32 vs float16 codes (12 rounds of 500 requests each, taking turns, "
     "three times; not in the CSV), put the server's engine step at p50 "
     "0.627/0.687/0.617 ms (float32) vs 0.629/0.652/0.598 ms (float16), p99 "
     "1.081/1.149/0.929 vs 1.016/1.085/0.885 ms."),
    ("Float16 graph codes, idle-poll rows", ("842ffaf", "488174c", "a17c649"),
     "Float16 codes, rescoring through the shared scoring kernel (bb631c5); idle-poll "
     "rows from 842ffaf. 488174c and a17c649 change server startup and the command "
     "line only."),
)


def _get(doc: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _git(*cmd: str) -> str:
    return subprocess.run(["git", *cmd], capture_output=True, text=True, cwd=ROOT,
                          check=True).stdout


def load_run(spec: str) -> tuple[dict[str, Any], str]:
    """A run's result JSON from a file or ``REV:PATH``, and where it was read from."""
    path = Path(spec)
    if path.exists():
        return json.loads(path.read_text()), str(path.resolve().relative_to(ROOT))
    rev, _, rel = spec.partition(":")
    text = _git("show", f"{rev}:{rel}")
    return json.loads(text), f"{_git('rev-parse', '--short=7', rev).strip()}:{rel}"


def run_row(res: dict[str, Any], source: str) -> dict[str, str]:
    """The CSV row of one run (empty cells for rows the run did not have)."""
    when = datetime.strptime(res["date"], "%Y-%m-%d %H:%M:%S %z").astimezone(UTC)
    git = res.get("git") or {}
    row = {"time_utc": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
           "commit": str(git.get("commit", ""))[:7],
           "src_clean": "" if "src_modified" not in git else
           ("yes" if not git["src_modified"] else "no"),
           "source": source, "n": str(res["settings"]["n"]),
           "top_clients": str(res["summary"]["top_clients"])}
    for name, path, digits in FIGURES:
        value = _get(res, path)
        row[name] = "" if value is None else f"{value:.{digits}f}"
    return row


def read_rows(path: Path = RUNS_CSV) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(rows: list[dict[str, str]], path: Path = RUNS_CSV) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["time_utc"]))
    path.write_text(out.getvalue())


# -- the page ------------------------------------------------------------------------------


def _num(row: dict[str, str], name: str) -> float | None:
    return float(row[name]) if row.get(name) else None


def _cell(names: Sequence[str], values: Sequence[float | None], fmt: str) -> str:
    """Values joined by " / "; a Peregrine path's p99 in bold where it met the target."""
    def one(name: str, v: float | None) -> str:
        if v is None:
            return "-"
        text = format(v, fmt)
        bold = name.startswith(("json_p99", "msgpack_p99")) and v <= TARGET_P99_MS
        return f"**{text}**" if bold else text
    return " / ".join(one(n, v) for n, v in zip(names, values, strict=True))


# (header, CSV columns, format)
TABLE: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("JSON p50 / p99", ("json_p50_ms", "json_p99_ms"), ".3f"),
    ("msgpack p50 / p99", ("msgpack_p50_ms", "msgpack_p99_ms"), ".3f"),
    ("overhead JSON / msgpack", ("json_overhead_ms", "msgpack_overhead_ms"), "+.3f"),
    ("p99 pinned JSON / msgpack", ("json_p99_pinned_ms", "msgpack_p99_pinned_ms"), ".3f"),
    ("p99 idle-poll JSON / msgpack", ("json_p99_idlepoll_ms", "msgpack_p99_idlepoll_ms"),
     ".3f"),
    ("control p99 plain / pinned / idle-poll",
     ("control_p99_ms", "control_p99_pinned_ms", "control_p99_idlepoll_ms"), ".3f"),
    ("Chroma p99 plain / pinned / idle-poll",
     ("chroma_p99_ms", "chroma_p99_pinned_ms", "chroma_p99_idlepoll_ms"), ".2f"),
    ("{top} clients vs Chroma JSON / msgpack", ("json_vs_chroma_top", "msgpack_vs_chroma_top"),
     ".2f"),
)


def _met(rows: list[dict[str, str]], name: str) -> str:
    values = [v for r in rows if (v := _num(r, name)) is not None]
    return f"{sum(v <= TARGET_P99_MS for v in values)} of {len(values)}"


def _span(rows: list[dict[str, str]], name: str, fmt: str = ".2f") -> str:
    values = [v for r in rows if (v := _num(r, name)) is not None]
    return f"{min(values):{fmt}}-{max(values):{fmt}}" if values else ""


def group_section(title: str, text: str, rows: list[dict[str, str]]) -> list[str]:
    """A heading, what the code was, the runs' table with medians and what they met."""
    cols = [c for c in TABLE if any(r.get(name) for r in rows for name in c[1])]
    tops = {r["top_clients"] for r in rows}
    top = tops.pop() if len(tops) == 1 else "top"
    head = ["run (UTC)", "commit", *(c[0].format(top=top) for c in cols)]
    lines = [f"## {title}", "", text, "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["time_utc"][:16].replace("T", " "), f"`{r['commit']}`"]
        cells += [_cell(names, [_num(r, n) for n in names], fmt) for _, names, fmt in cols]
        lines.append("| " + " | ".join(cells) + " |")
    medians = []
    for _, names, fmt in cols:
        values = [[v for r in rows if (v := _num(r, n)) is not None] for n in names]
        medians.append(_cell(names, [statistics.median(v) if v else None for v in values], fmt))
    lines.append(f"| median of {len(rows)} | | " + " | ".join(medians) + " |")
    clean = sum(r["src_clean"] == "yes" for r in rows)
    facts = [f"src/ clean in {clean} of {len(rows)} runs. p99 target (<= 2 ms) met: JSON "
             f"{_met(rows, 'json_p99_ms')}, msgpack {_met(rows, 'msgpack_p99_ms')}"]
    for label, suffix in (("pinned", "pinned"), ("idle-poll", "idlepoll")):
        if any(r[f"json_p99_{suffix}_ms"] for r in rows):
            facts[-1] += (f"; {label} JSON {_met(rows, f'json_p99_{suffix}_ms')}, msgpack "
                          f"{_met(rows, f'msgpack_p99_{suffix}_ms')}")
    facts[-1] += "."
    facts.append(f"Control p99 {_span(rows, 'control_p99_ms')} ms; Chroma's own-client p99 "
                 f"{_span(rows, 'chroma_p99_ms')} ms.")
    cuts = [1 - i / d for r in rows for p in ("json", "msgpack")
            if (i := _num(r, f"{p}_p99_idlepoll_ms")) is not None
            and (d := _num(r, f"{p}_p99_ms"))]
    if cuts:
        facts.append(f"Idle-poll p99 against the default rows' p99 of the same run: "
                     f"{min(cuts):.0%} to {max(cuts):.0%} lower.")
    return [*lines, "", " ".join(facts), ""]


def render(rows: list[dict[str, str]]) -> str:
    latest = rows[-1] if rows else {}
    lines = [
        "# HTTP benchmark runs",
        "",
        "Generated by `python bench/http_bench_runs.py` from `http_bench_runs.csv`: one row per "
        "run of `python bench/http_bench.py` (200k x 384 real-text vectors, 5 timed passes "
        "at 1 client, 1/4/16 clients for throughput) on the 2-core VM of "
        "[docs/benchmarks-http.md](../../docs/benchmarks-http.md), with the time it ran (UTC), "
        "the commit it measured and where its full result JSON is (`source`: a path, or "
        "`REV:PATH` for `git show`). The latest, "
        f"{latest.get('time_utc', '')[:16].replace('T', ' ')} on `{latest.get('commit', '')}`, "
        "is `http_bench.json`, rendered in docs/benchmarks-http.md; `python bench/http_bench.py "
        "--render-only --json FILE --out OUT.md` renders any of them.",
        "",
        "Times in ms. p50 and p99 at 1 client, client-observed (target p99 <= 2; bold where "
        "met). Overhead: HTTP p50 minus the p50 of the in-process engine taking turns with the "
        "HTTP paths (target <= 0.5). Pinned: the server's threads on one vCPU and the client on "
        "the other (`bench/cpu_pinning.py`). Idle-poll: one `SCHED_IDLE` process per vCPU "
        "looping on `sched_yield()`, as `peregrine serve --runtime-idle-poll` starts, resumed "
        "for those rows' blocks only. Control: uvicorn serving an app that only busy-waits the "
        "in-process p50. Chroma: its own client. Last column: requests/s at the top client "
        "count over Chroma's (target >= 2x). Medians of an even count are the mean of the "
        "middle two.",
        "",
    ]
    known: set[str] = set()
    for title, commits, text in GROUPS:
        known.update(commits)
        group = [r for r in rows if r["commit"] in commits]
        if group:
            lines += group_section(title, text, group)
    for r in rows:
        if r["commit"] not in known:
            known.add(r["commit"])
            group = [x for x in rows if x["commit"] == r["commit"]]
            lines += group_section(f"Commit {r['commit']}", "", group)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", help="result JSON files or REV:PATH to add")
    ap.add_argument("--check", action="store_true",
                    help="only check that the page matches the CSV")
    args = ap.parse_args(argv)
    rows = read_rows()
    if args.runs:
        if args.check:
            ap.error("--check takes no runs")
        new = [run_row(*load_run(spec)) for spec in args.runs]
        times = {r["time_utc"] for r in new}
        rows = [r for r in rows if r["time_utc"] not in times] + new
        write_rows(rows)
        rows = read_rows()
    page = render(rows)
    if args.check:
        if not RUNS_MD.exists() or RUNS_MD.read_text() != page:
            print(f"{RUNS_MD.relative_to(ROOT)} is stale: run python bench/http_bench_runs.py",
                  file=sys.stderr)
            return 1
        return 0
    RUNS_MD.write_text(page)
    print(f"wrote {RUNS_MD.relative_to(ROOT)} ({len(rows)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
