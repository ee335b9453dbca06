"""What counting a request's items costs in the serving process: a full parse (as before
gateway.otlp.count) against the skeleton parse, on the ingest benchmark's requests.

    .venv/bin/python bench/count.py [--spans 1000] [--repeat 200]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otlp_payloads import build_request  # noqa: E402  (bench/, first on sys.path)

from gateway.otlp import decode  # noqa: E402
from gateway.otlp.count import count_items  # noqa: E402
from vocabulary import Signal  # noqa: E402


def best_of(fn, data: bytes, repeat: int) -> float:
    """Milliseconds per call: the best of five rounds of `repeat` calls."""
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            fn(data)
        rounds.append((time.perf_counter() - started) / repeat * 1000)
    return min(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    data = build_request(random.Random(1), args.spans).SerializeToString()

    def full(body: bytes) -> int:
        return decode.item_count(Signal.TRACES, decode.parse(Signal.TRACES, body, decode.Encoding.PROTOBUF))

    assert full(data) == count_items(Signal.TRACES, data) == args.spans
    full_ms, skeleton_ms = (
        best_of(full, data, args.repeat),
        best_of(lambda body: count_items(Signal.TRACES, body), data, args.repeat),
    )
    print(
        f"{args.spans} spans, {len(data) / 1024:.0f} KiB: full parse + count {full_ms:.3f} ms, "
        f"skeleton count {skeleton_ms:.3f} ms ({full_ms / skeleton_ms:.1f}x less)"
    )


if __name__ == "__main__":
    main()
