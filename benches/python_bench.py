"""Per-operation latency of quantshift_core from Python, next to redis-py's PING and SET to the
same server in the same run, and round trips per call counted by the server.

    .venv/bin/python benches/python_bench.py [--write BENCHMARKS.md]

Starts its own redis-server on a free loopback port (tests/python/redis_server.py). Each
network operation is timed call by call (time.perf_counter_ns), in interleaved rounds so
that load on the machine hits every operation alike; medians and 99th percentiles are
reported, and ratios to redis-py's PING median. is_primary() and epoch are timed in loops
(best of five loops of 200 000 calls: a per-call clock would cost more than the call).
Round trips are the
server's `total_reads_processed` delta (INFO stats) over many calls, less the INFO's own.
With --write, the section `## Python` of the file is replaced (or appended).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

import redis  # noqa: E402

from quantshift_core import StateManager  # noqa: E402
from quantshift_core.aio import AsyncStateManager  # noqa: E402

from redis_server import RedisServer  # noqa: E402

ROUNDS = 40
PER_ROUND = 50
POSITIONS = 200
STATE = {"strategy": "moving_average", "last_trade": "2025-12-24T22:00:00", "daily_pnl": 150.50}
POSITION = {"quantity": 10, "entry_price": 150.00, "stop_loss": 145.00, "take_profit": 160.00}


def percentile(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def server_counters(client: redis.Redis) -> tuple[int, float, float]:
    """Socket reads processed; microseconds spent in scripts, and in all commands."""
    reads = int(client.info("stats")["total_reads_processed"])
    stats = client.info("commandstats")
    scripts = sum(float(v["usec"]) for k, v in stats.items() if k.startswith("cmdstat_eval"))
    total = sum(float(v["usec"]) for v in stats.values())
    return reads, scripts, total


def round_trips(
    client: redis.Redis, op: Callable[[], object], calls: int = 200
) -> tuple[float, float]:
    """Server socket reads per call (one per round trip) and server execution time per call,
    the least of three tries; the INFO calls' own reads are taken out. The commands a script
    runs are counted on their own too, so an operation that runs scripts is timed by its
    scripts alone."""
    best_trips, best_usec = float("inf"), float("inf")
    for _ in range(3):
        reads0, scripts0, total0 = server_counters(client)
        for _ in range(calls):
            op()
        reads1, scripts1, total1 = server_counters(client)
        usec = scripts1 - scripts0 if scripts1 > scripts0 else total1 - total0
        best_trips = min(best_trips, (reads1 - reads0 - 2) / calls)
        best_usec = min(best_usec, usec / calls)
    return best_trips, best_usec


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", metavar="FILE", help="replace the ## Python section of FILE")
    args = parser.parse_args()

    with RedisServer() as server:
        client = redis.Redis(host="127.0.0.1", port=server.port)
        # The default lock_ttl (30 s): its lease thread renews every 10 s, off the counts.
        state = StateManager("bench-bot", server.url, install_signal_handlers=False)
        reader = StateManager("bench-reader", server.url, install_signal_handlers=False)
        assert state.wait_until_primary(5) and reader.wait_until_primary(5)
        for i in range(POSITIONS):
            reader.save_position(f"SYM{i:03d}", dict(POSITION))
        # Unrelated keys: load_positions must not scan them.
        client.mset({f"unrelated:{i}": "x" for i in range(10_000)})
        state.save_position("AAPL", dict(POSITION))
        payload = json.dumps(STATE)
        position_keys = [f"bot:bench-reader:position:SYM{i:03d}" for i in range(POSITIONS)]

        def redis_py_load_positions() -> dict:
            # What a hand-written loader costs: one MGET of known keys, json.loads each.
            values = client.mget(position_keys)
            return {k: json.loads(v) for k, v in zip(position_keys, values) if v is not None}

        fills = iter(range(10**9))

        ops: dict[str, Callable[[], object]] = {
            "redis-py PING": client.ping,
            "redis-py SET (state-sized value)": lambda: client.set("bench:set", payload),
            # What the predecessor's heartbeat() sent: the ISO time with a 60 s TTL.
            "redis-py heartbeat (the predecessor: SET bot:…:heartbeat EX 60)": lambda: client.set(
                "bot:bench-bot:heartbeat-predecessor",
                datetime.datetime.now(datetime.timezone.utc).isoformat(),
                ex=60,
            ),
            "heartbeat() (lease renewal + heartbeat + presence, one round trip)": state.heartbeat,
            "quantshift PING (same connection as the operations)": state._ping,
            "save_state (fenced write)": lambda: state.save_state(dict(STATE)),
            "save_position (fenced write)": lambda: state.save_position("AAPL", dict(POSITION)),
            "apply_fill (with fill_id)": lambda: state.apply_fill(
                "MSFT", 1, 100.0, fill_id=f"f{next(fills)}"
            ),
            "load_state": state.load_state,
            f"load_positions ({POSITIONS} positions)": reader.load_positions,
            f"redis-py MGET of the {POSITIONS} keys + json.loads each": redis_py_load_positions,
        }
        for op in ops.values():  # warm up: connections, script cache
            for _ in range(20):
                op()
        samples: dict[str, list[int]] = {name: [] for name in ops}
        for _ in range(ROUNDS):
            for name, op in ops.items():
                bucket = samples[name]
                for _ in range(PER_ROUND):
                    started = time.perf_counter_ns()
                    op()
                    bucket.append(time.perf_counter_ns() - started)

        loops = 200_000

        def per_call_ns(op: Callable[[], object]) -> float:
            """Best of five loops of `loops` calls (the least disturbed by other work)."""
            best = float("inf")
            for _ in range(5):
                started = time.perf_counter_ns()
                for _ in range(loops):
                    op()
                best = min(best, (time.perf_counter_ns() - started) / loops)
            return best

        is_primary_ns = per_call_ns(state.is_primary)
        empty_loop_ns = per_call_ns(lambda: None)
        epoch_ns = per_call_ns(lambda: state.epoch)

        trips = {
            f"load_positions ({POSITIONS} positions, 10 000 unrelated keys)": round_trips(
                client, reader.load_positions
            ),
            "save_state": round_trips(client, lambda: state.save_state(dict(STATE))),
            "load_state": round_trips(client, state.load_state),
            "apply_fill (with fill_id)": round_trips(
                client, lambda: state.apply_fill("MSFT", 1, 100.0, fill_id=f"f{next(fills)}")
            ),
        }
        async_samples = asyncio.run(measure_async(server.url, state, reader, fills))
        state.close()
        reader.close()

    ping = statistics.median(samples["redis-py PING"])
    lines = [
        "## Python",
        "",
        "Per-operation latency of `quantshift_core` called from Python, next to redis-py sending",
        "PING and SET to the same redis-server in the same run (`benches/python_bench.py`).",
        f"{ROUNDS} interleaved rounds of {PER_ROUND} calls per operation, each call timed;",
        "ratios are medians over redis-py's PING median.",
        "",
        "| operation | median | p99 | ratio to redis-py PING |",
        "|---|---|---|---|",
    ]
    for name, values in samples.items():
        median = statistics.median(values)
        lines.append(
            f"| {name} | {median / 1000:.1f} µs | {percentile(values, 0.99) / 1000:.1f} µs "
            f"| {median / ping:.2f}× |"
        )
    lines += [
        f"| is_primary() (best of 5 loops of {loops:,} calls) | {is_primary_ns:.0f} ns "
        f"(a call of an empty lambda: {empty_loop_ns:.0f} ns) | | {is_primary_ns / ping:.4f}× |",
        f"| epoch (same loops, through a lambda) | {epoch_ns:.0f} ns | | {epoch_ns / ping:.4f}× |",
        "",
        "Round trips per call, counted by the server (`total_reads_processed` delta, INFO's",
        "own reads taken out), and the server's execution time per call (`INFO commandstats`):",
        "",
        "| operation | round trips per call | server time per call |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {t:.2f} | {u:.1f} µs |" for name, (t, u) in trips.items()]
    heartbeat = statistics.median(
        samples["heartbeat() (lease renewal + heartbeat + presence, one round trip)"]
    )
    predecessor = statistics.median(
        samples["redis-py heartbeat (the predecessor: SET bot:…:heartbeat EX 60)"]
    )
    targets = {
        "is_primary() ≤ 2 µs": is_primary_ns <= 2000,
        f"heartbeat() ≤ 0.8× the predecessor's ({heartbeat / predecessor:.2f}×)": heartbeat
        <= 0.8 * predecessor,
        "fenced write (save_state) ≤ 1.15× redis-py PING": statistics.median(
            samples["save_state (fenced write)"]
        )
        <= 1.15 * ping,
        f"load_positions of {POSITIONS} ≤ 3 round trips": max(
            v[0] for k, v in trips.items() if k.startswith("load_positions")
        )
        <= 3,
    }
    own_ping = statistics.median(samples["quantshift PING (same connection as the operations)"])
    write = statistics.median(samples["save_state (fenced write)"])
    load = statistics.median(samples[f"load_positions ({POSITIONS} positions)"])
    mget = statistics.median(samples[f"redis-py MGET of the {POSITIONS} keys + json.loads each"])
    load_server = next(u for k, (_, u) in trips.items() if k.startswith("load_positions"))
    lines += [
        "",
        "Reading the figures: redis-py spends most of its PING in Python; the same PING through",
        f"this library costs {own_ping / ping:.2f}× as much. Against that PING a fenced write",
        f"(one EVALSHA: compare the lease token, then SET with TTL) is {write / own_ping:.2f}×:",
        "the script's server time and the JSON encoding of the state. apply_fill takes two",
        "round trips (read, then a compare-and-set write that is retried if the position moved).",
        f"load_positions of {POSITIONS} is one round trip whatever else is in Redis; of its "
        f"{load / 1000:.0f} µs,",
        f"{load_server:.0f} µs are the script's {POSITIONS} GETs on the server and the rest is",
        f"parsing and building {POSITIONS} dicts ({mget / load:.1f}× faster than a hand-written",
        "redis-py MGET of the same keys with json.loads).",
    ]
    lines += [
        "",
        "The asyncio face (`quantshift_core.aio.AsyncStateManager`): each `await` runs the call",
        "on the manager's thread pool and resumes the task on the loop. Timed in the same",
        "interleaved rounds as the blocking call beside it (same connection kind, same server),",
        "inside a running event loop:",
        "",
        "| operation | blocking median | `await` median | `await` p99 | added by the hop |",
        "|---|---|---|---|---|",
    ]
    for name, (sync_values, async_values) in async_samples.items():
        sync_median, async_median = statistics.median(sync_values), statistics.median(async_values)
        lines.append(
            f"| {name} | {sync_median / 1000:.1f} µs | {async_median / 1000:.1f} µs "
            f"| {percentile(async_values, 0.99) / 1000:.1f} µs "
            f"| {(async_median - sync_median) / 1000:+.1f} µs |"
        )
    lines += [
        "",
        "Targets: "
        + "; ".join(f"{k}: {'met' if ok else 'MISSED'}" for k, ok in targets.items())
        + ".",
    ]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines += [
        "",
        f"Release build (maturin, abi3), CPython {platform.python_version()}, "
        f"{redis_version()}, loopback, {os.cpu_count()} vCPUs shared with other work "
        f"(load average {load:.1f} at the end); {time.strftime('%Y-%m-%d')}, commit {commit}:",
        "",
        "```bash",
        "bash scripts/setup.sh && .venv/bin/maturin develop --release",
        ".venv/bin/python benches/python_bench.py --write BENCHMARKS.md",
        "```",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, text)
    return 0


async def measure_async(
    url: str, state: StateManager, reader: StateManager, fills: Iterator[int]
) -> dict[str, tuple[list[int], list[int]]]:
    """(blocking samples, await samples) per operation, interleaved round by round. The async
    managers are standbys of the same bots (reads work there); writes go through the
    blocking primary's own asyncio twin, made on another bot name."""
    writer = await AsyncStateManager.create("bench-async", url, install_signal_handlers=False)
    areader = await AsyncStateManager.create("bench-reader", url, install_signal_handlers=False)
    assert writer.is_primary()
    await writer.save_position("AAPL", dict(POSITION))
    pairs: dict[str, tuple[Callable[[], object], Callable[[], Awaitable[object]]]] = {
        "PING (same connection as the operations)": (state._ping, writer._ping),
        "save_state (fenced write)": (
            lambda: state.save_state(dict(STATE)),
            lambda: writer.save_state(dict(STATE)),
        ),
        "save_position (fenced write)": (
            lambda: state.save_position("AAPL", dict(POSITION)),
            lambda: writer.save_position("AAPL", dict(POSITION)),
        ),
        "apply_fill (with fill_id)": (
            lambda: state.apply_fill("MSFT", 1, 100.0, fill_id=f"f{next(fills)}"),
            lambda: writer.apply_fill("MSFT", 1, 100.0, fill_id=f"a{next(fills)}"),
        ),
        "load_state": (state.load_state, writer.load_state),
        f"load_positions ({POSITIONS} positions)": (reader.load_positions, areader.load_positions),
    }
    for sync_op, async_op in pairs.values():  # warm up
        for _ in range(20):
            sync_op()
            await async_op()
    out: dict[str, tuple[list[int], list[int]]] = {name: ([], []) for name in pairs}
    for _ in range(ROUNDS):
        for name, (sync_op, async_op) in pairs.items():
            sync_bucket, async_bucket = out[name]
            for _ in range(PER_ROUND):
                started = time.perf_counter_ns()
                sync_op()
                sync_bucket.append(time.perf_counter_ns() - started)
            for _ in range(PER_ROUND):
                started = time.perf_counter_ns()
                await async_op()
                async_bucket.append(time.perf_counter_ns() - started)
    await areader.close()
    await writer.close()
    return out


def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    version = out.split("v=")[1].split()[0] if "v=" in out else "?"
    return f"Redis {version}"


def write_section(path: str, section: str) -> None:
    """Replaces the `## Python` section (up to the next `## ` heading) or appends it."""
    existing = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    lines = existing.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "## Python"), None)
    if start is None:
        joined = existing.rstrip("\n") + ("\n\n" if existing.strip() else "") + section
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        rest = "".join(lines[end:])
        joined = "".join(lines[:start]) + section + ("\n" + rest if rest else "")
    with open(path, "w", encoding="utf-8") as f:
        f.write(joined.rstrip("\n") + "\n")


if __name__ == "__main__":
    sys.exit(main())
