"""Capacity: N bot pairs (primary + standby StateManager) in one process against one
redis-server, at the default timings and at lock_ttl 2 s. A benchmark, not a test.

    .venv/bin/python benches/capacity.py [--pairs 10 100 1000] [--window 20] [--samples 5]

Reports per configuration: Redis commands/s per pair (INFO stats total_commands_processed
delta over the window), Redis CPU per pair (INFO cpu used_cpu_sys + used_cpu_user delta),
threads per manager (/proc/self/task), connections per manager (INFO clients
connected_clients), memory per manager (RSS delta), and crash-failover percentiles: for a
sample of pairs whose primary is a child process (tests/python/bot_process.py) killed with
SIGKILL while the N pairs run, the time until the in-process standby is primary.
Each row runs in a new process against a new redis-server, so that its threads, memory and
Redis CPU start from nothing. Re-run it after lease changes: it only uses the public Python
API.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

import redis  # noqa: E402

from quantshift_core import StateManager  # noqa: E402

from redis_server import RedisServer  # noqa: E402


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def counters(client: redis.Redis) -> tuple[int, float, int]:
    stats, cpu, clients = client.info("stats"), client.info("cpu"), client.info("clients")
    return (
        int(stats["total_commands_processed"]),
        float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        int(clients["connected_clients"]),
    )


def failover_ms(url: str, bot: str, lock_ttl: float) -> float | None:
    """A primary in a child process, SIGKILLed; ms until the standby here is primary."""
    child = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tests", "python", "bot_process.py"), url, bot,
         str(lock_ttl), "run"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    standby = None
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if line.startswith("READY") and line.split()[-1] == "primary":
                break
            if not line:
                return None
        standby = StateManager(bot, url, lock_ttl=lock_ttl, install_signal_handlers=False)
        if standby.is_primary():
            return None
        child.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        child.wait(10)
        give_up = killed + 3 * lock_ttl + 10
        while time.monotonic() < give_up:
            if standby.is_primary():
                return (time.monotonic() - killed) * 1000
            time.sleep(0.001)
        return None
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if standby is not None:
            standby.close()


def run(url: str, client: redis.Redis, pairs: int, lock_ttl: float, window: float,
        samples: int) -> dict[str, float]:  # fmt: skip
    threads0, rss0, (_, _, clients0) = threads(), rss_bytes(), counters(client)
    managers: list[StateManager] = []
    started = time.monotonic()
    for i in range(pairs):
        bot = f"cap-{lock_ttl:g}-{i}"
        primary = StateManager(bot, url, lock_ttl=lock_ttl, install_signal_handlers=False)
        standby = StateManager(bot, url, lock_ttl=lock_ttl, install_signal_handlers=False)
        managers += [primary, standby]
    start_s = time.monotonic() - started
    time.sleep(2)
    commands0, cpu0, clients1 = counters(client)
    time.sleep(window)
    commands1, cpu1, _ = counters(client)
    threads1, rss1 = threads(), rss_bytes()
    times = [failover_ms(url, f"cap-fo-{lock_ttl:g}-{pairs}-{k}", lock_ttl) for k in range(samples)]
    measured = sorted(t for t in times if t is not None)
    for manager in managers:
        manager.close()
    n = 2 * pairs
    return {
        "start_s": start_s,
        "commands_per_s_per_pair": (commands1 - commands0 - 3) / window / pairs,
        "cpu_ms_per_s_per_pair": (cpu1 - cpu0) * 1000 / window / pairs,
        "redis_cpu_percent": (cpu1 - cpu0) * 100 / window,
        "threads_per_manager": (threads1 - threads0) / n,
        "connections_per_manager": (clients1 - clients0) / n,
        "rss_kib_per_manager": (rss1 - rss0) / 1024 / n,
        "failover_p50": statistics.median(measured) if measured else float("nan"),
        "failover_max": max(measured) if measured else float("nan"),
        "failover_missing": len(times) - len(measured),
    }


def one_row(pairs: int, lock_ttl: float, window: float, samples: int) -> dict[str, float]:
    """One configuration against its own redis-server (run in a child process)."""
    with RedisServer("--maxclients", "20000") as server:
        client = redis.Redis(host="127.0.0.1", port=server.port)
        return run(server.url, client, pairs, lock_ttl, window, samples)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--lock-ttl", type=float, nargs="+", default=[30.0, 2.0])
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--one-row", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_row:
        row = one_row(args.pairs[0], args.lock_ttl[0], args.window, args.samples)
        print(json.dumps(row), flush=True)
        return 0
    rows = [
        "| pairs | lock_ttl | commands/s per pair | Redis CPU per pair (ms/s) | Redis CPU total "
        "| threads per manager | connections per manager | RSS per manager | start-up "
        "| crash failover p50 / max (samples) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lock_ttl in args.lock_ttl:
        for pairs in args.pairs:
            child = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--one-row", "--pairs", str(pairs),
                 "--lock-ttl", str(lock_ttl), "--window", str(args.window),
                 "--samples", str(args.samples)],
                stdout=subprocess.PIPE, text=True, check=True,
            )  # fmt: skip
            r = json.loads(child.stdout.strip().splitlines()[-1])
            row = (
                f"| {pairs} | {lock_ttl:g} s | {r['commands_per_s_per_pair']:.2f} "
                f"| {r['cpu_ms_per_s_per_pair']:.3f} | {r['redis_cpu_percent']:.1f} % "
                f"| {r['threads_per_manager']:.2f} | {r['connections_per_manager']:.2f} "
                f"| {r['rss_kib_per_manager']:.0f} KiB | {r['start_s']:.1f} s "
                f"| {r['failover_p50']:.0f} / {r['failover_max']:.0f} ms "
                f"({args.samples - r['failover_missing']}/{args.samples}) |"
            )
            rows.append(row)
            # Progress on stderr: stdout is the table, each row once.
            print(row, file=sys.stderr, flush=True)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
