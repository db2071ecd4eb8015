"""Markdown table of criterion medians, each as a ratio to the PING of its group."""

import json
import sys
from pathlib import Path


def median_ns(path: Path) -> float:
    return json.loads((path / "new" / "estimates.json").read_text())["median"]["point_estimate"]


def fmt(ns: float) -> str:
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.1f} ns"


def main(root: Path) -> None:
    print("| group / operation | median | ratio to PING |")
    print("|---|---|---|")
    for group in sorted(p for p in root.iterdir() if (p / "ping").is_dir()):
        ping = median_ns(group / "ping")
        for bench in sorted(p for p in group.iterdir() if (p / "new").is_dir()):
            ns = median_ns(bench)
            print(f"| {group.name} / {bench.name} | {fmt(ns)} | {ns / ping:.2f}× |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
