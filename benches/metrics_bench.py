"""Scrape time of the Prometheus exporter (`quantshift-state metrics`) for N bots. A benchmark,
not a test.

    .venv/bin/python benches/metrics_bench.py [--bots 100] [--scrapes 100]

Starts a redis-server on a free loopback port, N bot pairs (primary + standby StateManager,
default timings) in this process, each primary with a state and 5 positions, and the
exporter of the installed package (`python -m quantshift_core metrics`, the tool compiled
into the wheel: build it with `pip install .` or `maturin develop --release`). Then scrapes
/metrics over HTTP (urllib, a new connection each time, as Prometheus does every interval)
with the bots named on the exporter's command line, and with none named (every bot found by
a SCAN at each scrape), and prints the median and p95 wall time of a scrape beside a
redis-py PING to the same server, measured in the same run.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from quantshift_core import StateManager  # noqa: E402

from redis_server import RedisServer  # noqa: E402


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Exporter:
    def __init__(self, url: str, bots: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "quantshift_core", "--url", url, "metrics"]
            + ["--listen", "127.0.0.1:0", *bots],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
        if not found:
            self.process.kill()
            raise RuntimeError(f"the exporter did not start: {line}")
        self.url = f"http://127.0.0.1:{found.group(1)}/metrics"
        # Keep reading its log, so a full pipe never blocks it.
        threading.Thread(target=self.process.stderr.read, daemon=True).start()

    def scrape(self) -> str:
        with urllib.request.urlopen(self.url, timeout=60) as response:
            body: str = response.read().decode()
            return body

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=30)


def time_scrapes(exporter: Exporter, scrapes: int, bots: list[str]) -> list[float]:
    body = exporter.scrape()  # warm-up: connection and script load
    families = {f.name: f for f in text_string_to_metric_families(body)}
    seen = {s.labels["bot"] for s in families["quantshift_bot_has_primary"].samples}
    assert set(bots) <= seen, f"{len(set(bots) - seen)} bots missing from the scrape"
    assert all(s.value == 1 for s in families["quantshift_bot_has_primary"].samples)
    times = []
    for _ in range(scrapes):
        start = time.perf_counter()
        exporter.scrape()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bots", type=int, default=100)
    parser.add_argument("--scrapes", type=int, default=100)
    args = parser.parse_args()
    # The test server runs without persistence: its start-up warning, once per manager, is
    # not news here.
    logging.getLogger("quantshift_core").setLevel(logging.ERROR)

    with RedisServer() as server:
        client = server.client()
        managers: list[StateManager] = []
        names = [f"bench-bot-{i:04d}" for i in range(args.bots)]
        started = time.monotonic()
        for name in names:
            primary = StateManager(name, server.url, install_signal_handlers=False)
            managers.append(primary)
            assert primary.wait_until_primary(30)
            managers.append(StateManager(name, server.url, install_signal_handlers=False))
            for n in range(5):
                primary.save_position(f"SYM{n}", {"quantity": n, "avg_price": 100.0 + n})
            primary.save_state({"cash": 1000.0, "orders": list(range(10))})
        print(f"{args.bots} bot pairs started in {time.monotonic() - started:.1f} s")

        pings = []
        for _ in range(1000):
            start = time.perf_counter()
            client.ping()
            pings.append(time.perf_counter() - start)
        ping = statistics.median(pings)

        rows = []
        for label, named in [("bots named", names), ("bots found by SCAN", [])]:
            exporter = Exporter(server.url, named)
            try:
                times = time_scrapes(exporter, args.scrapes, names)
            finally:
                exporter.stop()
            rows.append((label, statistics.median(times), percentile(times, 0.95)))
        for manager in managers:
            manager.close()

    print()
    print(f"| scrape of {args.bots} bots | median | p95 | median / redis-py PING |")
    print("|---|---|---|---|")
    for label, median, p95 in rows:
        print(f"| {label} | {median * 1e3:.2f} ms | {p95 * 1e3:.2f} ms | {median / ping:.0f}× |")
    print(f"| redis-py PING (same run) | {ping * 1e6:.1f} µs | | 1× |")
    print(f"\n{args.scrapes} scrapes each, {args.bots} primaries + {args.bots} standbys running")


if __name__ == "__main__":
    main()
