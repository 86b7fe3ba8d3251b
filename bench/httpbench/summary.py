"""The issue's targets per HTTP path (``summarize``) and the console table."""

from __future__ import annotations

from typing import Any

from httpbench.common import (
    FLOOR,
    IDLE_POLL,
    INPROC_PAIRED,
    LABELS,
    PEREGRINE_CLIENTS,
    PINNED,
    PINNED_PEREGRINE,
    TARGET_CHROMA_RATIO,
    TARGET_OVERHEAD_P50_MS,
    TARGET_P99_MS,
)


def _rows(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rows = {"inproc": res.get("inproc", {})}
    for phase in ("peregrine_server", "chroma_server"):
        for kind, value in res.get(phase, {}).items():
            if kind in LABELS:
                rows[kind] = value
    return rows


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """The issue's three targets, per HTTP path."""
    rows = _rows(res)
    top = str(max(res["settings"]["clients"]))
    p50s = [lat["p50_ms"] for key in ("latency", "latency_after_server")
            if (lat := rows["inproc"].get(key))]
    inproc_p50 = sum(p50s) / len(p50s) if p50s else None
    paired = rows.get(INPROC_PAIRED, {}).get("latency")
    if paired:  # measured at the same moments as the HTTP paths: the fairer baseline
        inproc_p50 = paired["p50_ms"]
    chroma_rps = rows.get("chroma", {}).get("throughput", {}).get(top, {}).get("rps")
    out: dict[str, Any] = {"top_clients": int(top), "inproc_p50_ms": inproc_p50,
                           "inproc_p50_runs_ms": p50s,
                           "chroma_rps_top": chroma_rps, "paths": {}}
    variants = [kind + suffix for suffix in (PINNED, IDLE_POLL)
                for kind in PINNED_PEREGRINE if kind != FLOOR]
    for kind in (*PEREGRINE_CLIENTS, *variants):
        row = rows.get(kind, {})
        lat = row.get("latency")
        if not lat:
            continue
        p: dict[str, Any] = {"p99_ms": lat["p99_ms"], "p99_ok": lat["p99_ms"] <= TARGET_P99_MS}
        if inproc_p50 is not None:
            p["overhead_p50_ms"] = lat["p50_ms"] - inproc_p50
            p["overhead_ok"] = p["overhead_p50_ms"] <= TARGET_OVERHEAD_P50_MS
        rps = row.get("throughput", {}).get(top, {}).get("rps")
        if rps is not None and chroma_rps:
            p["rps_top"] = rps
            p["vs_chroma"] = rps / chroma_rps
            p["vs_chroma_ok"] = p["vs_chroma"] >= TARGET_CHROMA_RATIO
        out["paths"][kind] = p
    for key, kind in (("floor", FLOOR), ("floor_pinned", FLOOR + PINNED),
                      ("floor_idlepoll", FLOOR + IDLE_POLL)):
        floor = rows.get(kind, {}).get("latency")
        if floor:
            out[key] = {"wait_ms": floor.get("wait_ms"), "p50_ms": floor["p50_ms"],
                        "p99_ms": floor["p99_ms"]}
    return out


def print_table(res: dict[str, Any]) -> None:
    clients = [str(c) for c in res["settings"]["clients"]]
    head = (f"{'path':<26} {'p50 ms':>8} {'p99 ms':>8} {'recall':>7} "
            + " ".join(f"{'rps@' + c:>9}" for c in clients))
    print(head)
    print("-" * len(head))
    for kind, row in _rows(res).items():
        lat = row.get("latency")
        if not lat:
            print(f"{kind:<26} failed: {row.get('error', '')[:70]}")
            continue
        tp = row.get("throughput", {})
        rps = " ".join(f"{tp[c]['rps']:>9.0f}" if c in tp else f"{'':>9}" for c in clients)
        recall = lat.get("recall_at_10")
        print(f"{kind:<26} {lat['p50_ms']:>8.3f} {lat['p99_ms']:>8.3f} "
              f"{'n/a' if recall is None else f'{recall:.4f}':>7} {rps}")
    print()
    for kind, p in res["summary"]["paths"].items():
        parts = [f"p99 {p['p99_ms']:.3f} ms ({'ok' if p['p99_ok'] else 'MISSED'})"]
        if "overhead_p50_ms" in p:
            parts.append(f"overhead {p['overhead_p50_ms']:+.3f} ms "
                         f"({'ok' if p['overhead_ok'] else 'MISSED'})")
        if "vs_chroma" in p:
            ok = "ok" if p["vs_chroma_ok"] else "MISSED"
            parts.append(f"{p['vs_chroma']:.2f}x Chroma ({ok})")
        print(f"{kind:<26} " + ", ".join(parts))
