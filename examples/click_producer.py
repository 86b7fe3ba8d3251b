"""A realistic click stream for ``examples.recommendations``, and its latency meter.

A seeded catalog of products (category, brand, materials, colours, and a
sentence of description each), and users who each favour a few categories and
click popular products more often (Zipf), with repeats, as shoppers do. Clicks
are published at a fixed rate on ``clicks``; with ``--measure`` the script also
subscribes to ``recommendations.>`` and reports the time from publishing a
click to receiving its recommendation.

    python -m examples.click_producer --nats nats://127.0.0.1:4222 --rate 200 \\
        --seconds 30 --measure
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

CATEGORIES: dict[str, tuple[list[str], list[str]]] = {
    "running shoes": (["trail running shoe", "road running shoe", "racing flat",
                       "stability trainer", "cushioned daily trainer"],
                      ["breathable mesh upper", "carbon plate", "grippy lugged outsole",
                       "wide toe box", "reflective heel tab"]),
    "outdoor jackets": (["rain shell", "down parka", "softshell jacket", "fleece jacket",
                         "insulated hoodie"],
                        ["taped seams", "packable hood", "pit zips", "recycled nylon",
                         "700-fill down"]),
    "kitchen": (["chef's knife", "cast iron skillet", "electric kettle", "espresso grinder",
                 "nonstick saucepan"],
                ["full-tang steel", "pre-seasoned surface", "variable temperature",
                 "conical burrs", "induction-ready base"]),
    "audio": (["wireless earbuds", "over-ear headphones", "bookshelf speaker",
               "portable speaker", "USB microphone"],
              ["active noise cancelling", "30-hour battery", "aptX codec", "waterproof shell",
               "cardioid capsule"]),
    "books": (["mystery novel", "cookbook", "science fiction paperback", "travel guide",
               "history of mathematics"],
              ["illustrated edition", "award-winning author", "large print", "annotated",
               "first volume of a trilogy"]),
    "toys": (["building blocks set", "wooden train", "puzzle", "remote control car",
              "plush bear"],
             ["ages 3 and up", "500 pieces", "rechargeable battery", "non-toxic paint",
              "machine washable"]),
    "garden": (["pruning shears", "raised garden bed", "hose reel", "seed starter kit",
                "compost bin"],
               ["bypass blade", "cedar wood", "30 m hose", "heat mat included",
                "rodent-proof lid"]),
    "office": (["ergonomic chair", "standing desk", "mechanical keyboard", "monitor arm",
                "noise-free mouse"],
               ["lumbar support", "dual motor", "hot-swappable switches", "gas spring",
                "silent clicks"]),
}
BRANDS = ["Northpeak", "Aster", "Kiln & Co", "Velo", "Brightline", "Oakmoor", "Tidewater",
          "Lumen", "Fjell", "Cobalt"]
COLOURS = ["black", "navy", "olive", "sand", "red", "white", "charcoal", "teal"]


@dataclass(frozen=True)
class Product:
    id: str
    category: str
    description: str


def catalog(n: int, rng: random.Random) -> list[Product]:
    products = []
    names = list(CATEGORIES)
    for i in range(n):
        category = names[i % len(names)]
        kinds, features = CATEGORIES[category]
        kind = rng.choice(kinds)
        a, b = rng.sample(features, 2)
        text = (f"{rng.choice(BRANDS)} {kind} in {rng.choice(COLOURS)}, with {a} and {b}; "
                f"part of our {category} range.")
        products.append(Product(f"p{i:05d}", category, text))
    return products


class ClickModel:
    """Users with favourite categories and Zipf-popular products within them."""

    def __init__(self, products: list[Product], users: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.by_category: dict[str, list[Product]] = {}
        for p in products:
            self.by_category.setdefault(p.category, []).append(p)
        names = list(self.by_category)
        self.users = [(f"u{u:04d}", self.rng.sample(names, self.rng.randint(1, 3)))
                      for u in range(users)]
        self.weights = {c: [1 / (r + 1) ** 1.1 for r in range(len(ps))]
                        for c, ps in self.by_category.items()}

    def click(self) -> dict[str, Any]:
        user, favourites = self.rng.choice(self.users)
        category = self.rng.choice(favourites)
        product = self.rng.choices(self.by_category[category], self.weights[category])[0]
        return {"event_id": uuid.uuid4().hex, "user_id": user, "product_id": product.id,
                "description": product.description, "ts": time.time()}


def _percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, int(q / 100 * len(sorted_ms)))]


async def run(url: str, rate: float, seconds: float, products: int, users: int, seed: int,
              measure: bool, subject: str = "clicks", drain_s: float = 5.0) -> dict[str, Any]:
    """Publish ``rate`` clicks/s for ``seconds``; returns counts and latencies (ms)."""
    import nats

    nc = await nats.connect(url)
    model = ClickModel(catalog(products, random.Random(seed)), users, seed + 1)
    sent_at: dict[str, float] = {}
    latencies: list[float] = []

    async def on_recommendation(msg: Any) -> None:
        received = time.perf_counter()
        try:
            event_id = json.loads(msg.data)["event_id"]
        except (ValueError, KeyError, TypeError):
            return
        started = sent_at.pop(event_id, None)
        if started is not None:
            latencies.append((received - started) * 1000)

    if measure:
        await nc.subscribe("recommendations.>", cb=on_recommendation)
        await nc.flush()
    total = int(rate * seconds)
    t0 = time.perf_counter()
    for i in range(total):
        wait = t0 + i / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        click = model.click()
        if measure:
            sent_at[click["event_id"]] = time.perf_counter()
        await nc.publish(subject, json.dumps(click).encode(),
                         headers={"Nats-Msg-Id": click["event_id"]})
    await nc.flush()
    elapsed = time.perf_counter() - t0
    if measure:
        deadline = time.perf_counter() + drain_s
        while sent_at and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
    await nc.close()
    ms = sorted(latencies)
    return {"published": total, "seconds": round(elapsed, 2), "rate": round(total / elapsed, 1),
            "received": len(ms), "missing": len(sent_at) if measure else None,
            "p50_ms": round(_percentile(ms, 50), 2), "p95_ms": round(_percentile(ms, 95), 2),
            "p99_ms": round(_percentile(ms, 99), 2),
            "max_ms": round(ms[-1], 2) if ms else float("nan")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--rate", type=float, default=200.0, help="clicks per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--products", type=int, default=2000, help="catalog size")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--measure", action="store_true",
                        help="time each click to its recommendation")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0:
        parser.error("--rate and --seconds must be positive")
    result = asyncio.run(run(args.nats, args.rate, args.seconds, args.products, args.users,
                             args.seed, args.measure))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
