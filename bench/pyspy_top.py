"""Summarise a py-spy `--format raw` recording (collapsed stacks: `frame;frame;... count`):
samples by thread role, then the functions with the most inclusive and self samples.

    .venv/bin/python bench/pyspy_top.py profile.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

ROLES = (  # first match wins, tested against the whole stack
    ("gRPC handler", "_export_handler"),
    ("HTTP handler", "gateway/otlp/http.py"),
    ("batcher", "Batcher._run"),
    ("gRPC server internals", "grpc/_server.py"),
)


def frames(stack: str) -> list[str]:
    # "func (path/file.py:123)" -> "func (path/file.py)": aggregate over line numbers
    return [re.sub(r":\d+\)$", ")", f) for f in stack.split(";") if f]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    total, roles, inclusive, own = 0, Counter(), Counter(), Counter()
    for line in open(args.file):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        n, fs = int(count), frames(stack)
        total += n
        roles[next((name for name, needle in ROLES if needle in stack), "other")] += n
        for f in set(fs):
            inclusive[f] += n
        own[fs[-1]] += n
    print(f"{total} samples\n\nby thread role:")
    for name, n in roles.most_common():
        print(f"  {n / total:6.1%}  {name}")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"\ntop {args.top} functions, {title}:")
        for f, n in counter.most_common(args.top):
            print(f"  {n / total:6.1%}  {f}")


if __name__ == "__main__":
    main()
