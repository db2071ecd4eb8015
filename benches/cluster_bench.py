"""Speed on a Redis Cluster (issue 19, part 7): quantshift_core on a `redis+cluster://` URL beside
redis-py's RedisCluster and a plain redis-py connection to the bot's owner node, and beside a
single redis-server, all in the same run.

    bash scripts/bench_cluster.sh [--write BENCHMARKS.md]      # starts the cluster, runs this
    .venv/bin/python benches/cluster_bench.py --cluster 127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3

The cluster is given (its seed nodes); the single redis-server is started here on a free
loopback port (tests/python/redis_server.py). Every bot used for the per-call figures is
served by one primary of the cluster (its owner: the node of the hash slot of `{<name>}`), so
each figure has the same baseline, a PING to that node.

Per call: each operation timed call by call (time.perf_counter_ns) in interleaved rounds, so
that load on the 2-core machine hits every operation alike; medians, and ratios to the
median of redis-py's PING to the owner on a plain connection. Round trips per call are the
owner's `total_reads_processed` delta (INFO's own reads taken out); the other primaries'
deltas show nothing is sent elsewhere (no MOVED hop).

Start: `StateManager(name, url)` from call to return, on the cluster and on the single node,
in interleaved rounds, for a bot nobody holds (the constructor waits the lease's take-over wait
before it calls itself primary) and for a standby of a held bot; the cluster's seed list
starts with a node that does not own the bot's slot, so discovery takes its full path (the
seed's map, then the owner). What the cluster adds is the median of the per-round
differences. redis-py's RedisCluster(...) construction (it reads CLUSTER SLOTS and connects)
is the baseline.

With --write FILE the section `## Redis Cluster (issue 19)` of FILE is replaced (or appended),
up to the next `## ` heading or its `### Rust core` subsection (written by hand from
benches/cluster.rs).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

import redis  # noqa: E402
from redis.cluster import ClusterNode, RedisCluster  # noqa: E402

import quantshift_core  # noqa: E402
from quantshift_core import StateManager  # noqa: E402

from redis_server import RedisServer  # noqa: E402

SECTION = "## Redis Cluster (issue 19)"
POSITIONS = 200
STATE = {"strategy": "moving_average", "last_trade": "2025-12-24T22:00:00", "daily_pnl": 150.50}
POSITION = {"quantity": 10, "entry_price": 150.00, "stop_loss": 145.00, "take_profit": 160.00}
WRITE_TARGET = 1.2
LOAD_TARGET = 3.0
STANDBY_STARTS = 4

Op = tuple[Callable[[], object], int, Callable[[], object]]


def nothing() -> None:
    pass


def measure(ops: dict[str, Op], rounds: int) -> dict[str, list[int]]:
    """Each op `calls` times per round, its untimed `before` run ahead of each call."""
    samples: dict[str, list[int]] = {name: [] for name in ops}
    for _ in range(rounds):
        for name, (op, calls, before) in ops.items():
            bucket = samples[name]
            for _ in range(calls):
                before()
                started = time.perf_counter_ns()
                op()
                bucket.append(time.perf_counter_ns() - started)
    return samples


def percentile(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def reads(client: redis.Redis) -> int:
    return int(client.info("stats")["total_reads_processed"])


def server_usec(client: redis.Redis) -> tuple[float]:
    """Microseconds the server spent running scripts (`INFO commandstats`)."""
    stats = client.info("commandstats")
    return (sum(float(v["usec"]) for k, v in stats.items() if k.startswith("cmdstat_eval")),)


def round_trips(
    owner: redis.Redis,
    others: list[redis.Redis],
    op: Callable[[], object],
    calls: int = 200,
    own_reads: int = 0,
) -> tuple[float, float, float]:
    """Socket reads per call on the owner (one per round trip) and on the other primaries
    together, and the owner's time per call in scripts, each the least of three tries; the
    INFO calls' own reads are taken out, and `own_reads` per call (a bench's own command in
    `op`). The lease thread's renewals (10 a second) land in the counts too: the least of
    three tries keeps them out."""
    best_owner, best_others, best_usec = float("inf"), float("inf"), float("inf")
    for _ in range(3):
        usec0 = server_usec(owner)
        before = [reads(owner)] + [reads(c) for c in others]
        for _ in range(calls):
            op()
        after = [reads(owner)] + [reads(c) for c in others]
        usec1 = server_usec(owner)
        scripts = usec1[0] - usec0[0]
        best_owner = min(best_owner, (after[0] - before[0] - 1) / calls - own_reads)
        best_others = min(
            best_others, sum(a - b - 1 for a, b in zip(after[1:], before[1:])) / calls
        )
        best_usec = min(best_usec, scripts / calls)
    return best_owner, best_others, best_usec


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cluster", required=True, help="seed nodes, host:port[,host:port]")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--calls", type=int, default=50, help="calls per operation per round")
    parser.add_argument("--starts", type=int, default=20, help="rounds of start-up timings")
    parser.add_argument(
        "--commit", help="the commit the installed quantshift_core was built from (default: HEAD)"
    )
    parser.add_argument("--write", metavar="FILE")
    args = parser.parse_args()
    # Every start logs the throwaway servers' persistence warning: said once in the report.
    logging.getLogger("quantshift_core").setLevel(logging.ERROR)

    seeds = []
    for part in args.cluster.split(","):
        host, _, port = part.rpartition(":")
        seeds.append((host, int(port)))
    rc = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in seeds])
    primaries = sorted((n.host, n.port) for n in rc.get_primaries())
    clients = {addr: redis.Redis(host=addr[0], port=addr[1]) for addr in primaries}

    def owner_of(name: str) -> tuple[str, int]:
        node = rc.get_node_from_key(f"bot:{{{name}}}:state")
        return (node.host, node.port)

    writer_name = "alpha"
    owner = owner_of(writer_name)
    reader_name = next(
        n
        for n in itertools.chain(
            ["beta", "gamma", "delta", "epsilon"], (f"reader-{i}" for i in itertools.count())
        )
        if owner_of(n) == owner
    )
    slot = rc.keyslot(f"bot:{{{writer_name}}}:state")
    # The seed list of quantshift's URL: the owner last, so a start asks another node first.
    ordered = [a for a in seeds if a != owner] + [a for a in seeds if a == owner]
    cluster_url = "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in ordered)
    first_seed = ordered[0]
    owner_client = clients[owner]
    others = [c for a, c in clients.items() if a != owner]
    owner_node = rc.get_node(host=owner[0], port=owner[1])
    payload = json.dumps(STATE)
    value = json.dumps(POSITION)
    print(
        f"bots {writer_name!r} and {reader_name!r}: slot owner {owner[0]}:{owner[1]} "
        f"(slot {slot} of {writer_name!r}); quantshift URL {cluster_url}",
        file=sys.stderr,
    )

    with RedisServer() as single:
        single_client = redis.Redis(host="127.0.0.1", port=single.port)
        sm = StateManager(writer_name, cluster_url, install_signal_handlers=False)
        reader = StateManager(reader_name, cluster_url, install_signal_handlers=False)
        ssm = StateManager(writer_name, single.url, install_signal_handlers=False)
        sreader = StateManager(reader_name, single.url, install_signal_handlers=False)
        for m in (sm, reader, ssm, sreader):
            assert m.wait_until_primary(5), f"{m.bot_name} never became primary"
        warnings = sorted(set(sm.startup_warnings) | set(ssm.startup_warnings))
        positions = {f"SYM{i:03d}": dict(POSITION) for i in range(POSITIONS)}
        reader.sync_positions(positions)
        sreader.sync_positions(positions)
        sm.save_position("AAPL", dict(POSITION))
        ssm.save_position("AAPL", dict(POSITION))
        assert len(reader.load_positions()) == POSITIONS
        assert len(sreader.load_positions()) == POSITIONS
        # Nothing of the bots lives elsewhere: every key is on the owner.
        assert owner_client.exists(f"bot:{{{reader_name}}}:position:SYM000") == 1
        position_keys = [f"bot:{{{reader_name}}}:position:SYM{i:03d}" for i in range(POSITIONS)]
        rc.set(f"bot:{{{writer_name}}}:bench-get", payload)

        def rc_load_positions() -> dict:
            # A hand-written loader on RedisCluster: one MGET (one slot), json.loads each.
            values = rc.mget(position_keys)
            return {k: json.loads(v) for k, v in zip(position_keys, values) if v is not None}

        def change_one() -> None:
            # Another client rewrites one position (untimed): the next load reads again.
            owner_client.set(f"bot:{{{reader_name}}}:position:SYM007", value)

        def changed_load() -> None:
            change_one()
            reader.load_positions()

        def single_change_one() -> None:
            single_client.set(f"bot:{reader_name}:position:SYM007", value)

        n = args.calls
        ops: dict[str, Op] = {
            "redis-py PING to the owner (plain connection)": (owner_client.ping, n, nothing),
            "redis-py RedisCluster PING to the owner (`target_nodes`)": (
                lambda: rc.ping(target_nodes=owner_node),
                n,
                nothing,
            ),
            "redis-py RedisCluster GET (bot's slot)": (
                lambda: rc.get(f"bot:{{{writer_name}}}:bench-get"),
                n,
                nothing,
            ),
            "redis-py RedisCluster SET (state-sized value, bot's slot)": (
                lambda: rc.set(f"bot:{{{writer_name}}}:bench-set", payload),
                n,
                nothing,
            ),
            "quantshift PING (`_ping`, the connection every operation uses)": (
                sm._ping,
                n,
                nothing,
            ),
            "save_state (fenced write)": (lambda: sm.save_state(dict(STATE)), n, nothing),
            "save_position (fenced write)": (
                lambda: sm.save_position("AAPL", dict(POSITION)),
                n,
                nothing,
            ),
            "load_state": (sm.load_state, n, nothing),
            f"load_positions ({POSITIONS} positions)": (reader.load_positions, n, nothing),
            f"load_positions ({POSITIONS} positions, one changed since the last load)": (
                reader.load_positions,
                max(1, n // 2),
                change_one,
            ),
            f"redis-py RedisCluster MGET of the {POSITIONS} keys + json.loads each": (
                rc_load_positions,
                max(1, n // 2),
                nothing,
            ),
            "single node: redis-py PING": (single_client.ping, n, nothing),
            "single node: quantshift PING": (ssm._ping, n, nothing),
            "single node: save_state (fenced write)": (
                lambda: ssm.save_state(dict(STATE)),
                n,
                nothing,
            ),
            "single node: save_position (fenced write)": (
                lambda: ssm.save_position("AAPL", dict(POSITION)),
                n,
                nothing,
            ),
            f"single node: load_positions ({POSITIONS} positions)": (
                sreader.load_positions,
                n,
                nothing,
            ),
            f"single node: load_positions ({POSITIONS} positions, one changed)": (
                sreader.load_positions,
                max(1, n // 2),
                single_change_one,
            ),
        }
        measure(ops, 2)  # warm-up: connections, script caches, tracking
        samples = measure(ops, args.rounds)

        trips = {
            "save_state": round_trips(owner_client, others, lambda: sm.save_state(dict(STATE))),
            "save_position": round_trips(
                owner_client, others, lambda: sm.save_position("AAPL", dict(POSITION))
            ),
            f"load_positions ({POSITIONS}, unchanged)": round_trips(
                owner_client, others, reader.load_positions
            ),
            f"load_positions ({POSITIONS}, one changed)": round_trips(
                owner_client, others, changed_load, own_reads=1
            ),
        }

        starts = measure_starts(
            args.starts, seeds, cluster_url, first_seed, owner_of, single, writer_name
        )
        for m in (sm, reader, ssm, sreader):
            m.close()
    rc.close()

    text = report(
        samples, trips, starts, owner, slot, writer_name, reader_name, cluster_url, warnings, args
    )
    print(text)
    if args.write:
        write_section(args.write, text)
    return 0


def measure_starts(
    rounds: int,
    seeds: list[tuple[str, int]],
    cluster_url: str,
    first_seed: tuple[str, int],
    owner_of: Callable[[str], tuple[str, int]],
    single: RedisServer,
    held: str,
) -> dict[str, list[int]]:
    """Start-up times (ns), interleaved: per round one start of a new bot and STANDBY_STARTS
    of the others (they are short, and noisier). New bot names are picked so that the first
    seed of the URL does not own their slot."""
    names = (f"start-{os.getpid()}-{i}" for i in itertools.count())

    def new_name() -> str:
        return next(n for n in names if owner_of(n) != first_seed)

    def start(url: str, name: str) -> int:
        started = time.perf_counter_ns()
        manager = StateManager(name, url, install_signal_handlers=False)
        took = time.perf_counter_ns() - started
        manager.close()
        return took

    def rc_construct() -> int:
        started = time.perf_counter_ns()
        client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in seeds])
        took = time.perf_counter_ns() - started
        client.close()
        return took

    def rc_construct_get() -> int:
        key = f"bot:{{{new_name()}}}:state"
        started = time.perf_counter_ns()
        client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in seeds])
        client.get(key)
        took = time.perf_counter_ns() - started
        client.close()
        return took

    def discovery_by_hand() -> int:
        # quantshift's discovery, its commands sent by redis-py: the first seed's map of the
        # slot, then the owner's ROLE on a new connection.
        name = new_name()
        key = f"bot:{{{name}}}:state"
        host, port = owner_of(name)
        started = time.perf_counter_ns()
        seed = redis.Redis(host=first_seed[0], port=first_seed[1])
        pipe = seed.pipeline(transaction=False)
        pipe.execute_command("CLUSTER", "KEYSLOT", key)
        pipe.execute_command("CLUSTER", "SHARDS")
        pipe.execute()
        node = redis.Redis(host=host, port=port)
        node.execute_command("ROLE")
        took = time.perf_counter_ns() - started
        seed.close()
        node.close()
        return took

    def redis_connect_ping() -> int:
        started = time.perf_counter_ns()
        client = redis.Redis(host="127.0.0.1", port=single.port)
        client.ping()
        took = time.perf_counter_ns() - started
        client.close()
        return took

    kinds: dict[str, tuple[Callable[[], int], int]] = {
        "cluster, new bot": (lambda: start(cluster_url, new_name()), 1),
        "single node, new bot": (lambda: start(single.url, new_name()), 1),
        "cluster, standby of a held bot": (lambda: start(cluster_url, held), STANDBY_STARTS),
        "single node, standby of a held bot": (lambda: start(single.url, held), STANDBY_STARTS),
        "discovery's commands sent by redis-py (new connections)": (
            discovery_by_hand,
            STANDBY_STARTS,
        ),
        "redis-py RedisCluster(...) construction": (rc_construct, STANDBY_STARTS),
        "redis-py RedisCluster(...) + first GET": (rc_construct_get, STANDBY_STARTS),
        "redis-py Redis(...) + first PING, single node": (redis_connect_ping, STANDBY_STARTS),
    }
    for fn, _ in kinds.values():  # warm-up
        fn()
    out: dict[str, list[int]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for name, (fn, times) in kinds.items():
            for _ in range(times):
                out[name].append(fn())
    return out


def us(ns: float) -> str:
    return f"{ns / 1000:.1f} µs"


def ms(ns: float) -> str:
    return f"{ns / 1e6:.2f} ms"


def report(
    samples: dict[str, list[int]],
    trips: dict[str, tuple[float, float, float]],
    starts: dict[str, list[int]],
    owner: tuple[str, int],
    slot: int,
    writer: str,
    reader: str,
    cluster_url: str,
    warnings: list[str],
    args: argparse.Namespace,
) -> str:
    med = {k: statistics.median(v) for k, v in samples.items()}
    ping = med["redis-py PING to the owner (plain connection)"]
    own_ping = med["quantshift PING (`_ping`, the connection every operation uses)"]
    single_ping = med["single node: redis-py PING"]
    lines = [
        SECTION,
        "",
        "A bot on a local Redis Cluster of 3 primaries (`redis+cluster://`, hash-tagged keys",
        "`bot:{<name>}:…`, every command sent to the primary owning the bot's slot), beside",
        "redis-py's `RedisCluster` and a plain redis-py connection to that owner node, and beside",
        "a single redis-server, all in one run (`benches/cluster_bench.py`, started by",
        "`scripts/bench_cluster.sh`). "
        f"{args.rounds} interleaved rounds of {args.calls} calls per operation"
        " (half as many for the rows after a change and the MGET), each call timed; ratios are",
        "medians over the median of redis-py's PING to the owner. The single-node rows are",
        "ratios to the single node's redis-py PING.",
        "",
        f"Bots `{writer}` (writes) and `{reader}` ({POSITIONS} positions) both live on "
        f"{owner[0]}:{owner[1]} (slot {slot} for `{writer}`); URL `{cluster_url}`.",
        "",
        "| operation | median | p99 | ratio to the PING to the owner | target |",
        "|---|---|---|---|---|",
    ]
    targets: list[tuple[str, float, float]] = []
    for name, values in samples.items():
        base = single_ping if name.startswith("single node") else ping
        ratio = med[name] / base
        verdict_cell = ""
        if name in ("save_state (fenced write)", "save_position (fenced write)"):
            verdict_cell = f"≤ {WRITE_TARGET}×: {'met' if ratio <= WRITE_TARGET else 'MISSED'}"
            targets.append((name, ratio, WRITE_TARGET))
        elif name == f"load_positions ({POSITIONS} positions)":
            verdict_cell = f"≤ {LOAD_TARGET:.0f}×: {'met' if ratio <= LOAD_TARGET else 'MISSED'}"
            targets.append((name, ratio, LOAD_TARGET))
        lines.append(
            f"| {name} | {us(med[name])} | {us(percentile(values, 0.99))} | {ratio:.2f}× "
            f"| {verdict_cell} |"
        )
    write = med["save_state (fenced write)"]
    position = med["save_position (fenced write)"]
    load = med[f"load_positions ({POSITIONS} positions)"]
    changed = med[f"load_positions ({POSITIONS} positions, one changed since the last load)"]
    rc_get = med["redis-py RedisCluster GET (bot's slot)"]
    rc_set = med["redis-py RedisCluster SET (state-sized value, bot's slot)"]
    lines += [
        "",
        "The same figures against the other baselines of the run:",
        "",
        "| operation | / quantshift PING | / RedisCluster GET | / RedisCluster SET |",
        "|---|---|---|---|",
    ]
    for name, v in (
        ("save_state (fenced write)", write),
        ("save_position (fenced write)", position),
        (f"load_positions ({POSITIONS} positions)", load),
        (f"load_positions ({POSITIONS}, one changed)", changed),
    ):
        lines.append(f"| {name} | {v / own_ping:.2f}× | {v / rc_get:.2f}× | {v / rc_set:.2f}× |")
    lines += [
        "",
        "Round trips per call, counted by the servers (`total_reads_processed` deltas, INFO's",
        "own reads and the bench's SET of a changed position taken out), and the owner's time",
        "per call in scripts (`INFO commandstats`); least of three tries of 200 calls:",
        "",
        "| operation | round trips to the owner | to the other primaries "
        "| owner's script time per call |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {k} | {o:.2f} | {x:.2f} | {f'{u:.1f} µs' if k.startswith('save') else '(no script)'} |"
        for k, (o, x, u) in trips.items()
    ]

    smed = {k: statistics.median(v) for k, v in starts.items()}

    def fast(name: str) -> list[int]:
        """The starts within 5 ms of the fastest (a standby's start is ~1 ms or ~11 ms)."""
        floor = min(starts[name])
        return [x for x in starts[name] if x < floor + 5_000_000]

    def added(a: str, b: str) -> tuple[float, float]:
        """Cluster minus single node: of the fast starts' medians, and of the fastest."""
        return (
            statistics.median(fast(a)) - statistics.median(fast(b)),
            min(starts[a]) - min(starts[b]),
        )

    new_added = added("cluster, new bot", "single node, new bot")
    standby_added = added("cluster, standby of a held bot", "single node, standby of a held bot")

    def signed(pair: tuple[float, float]) -> str:
        return f"{pair[0] / 1e6:+.2f} ms / {pair[1] / 1e6:+.2f} ms"

    lines += [
        "",
        "Start: `StateManager(name, url)` from the call to its return, in "
        f"{args.starts} interleaved rounds (one new bot's start per round, {STANDBY_STARTS} of "
        "each other kind). The cluster URL's first",
        "seed does not own the started bot's slot: discovery asks it (`CLUSTER KEYSLOT` and",
        "`CLUSTER SHARDS` in one round trip), then connects to the owner and checks its `ROLE`;",
        "each further connection of the manager goes to the known owner (connect + `ROLE`).",
        "A new bot's start includes the lease's take-over wait (a lease nobody holds is taken",
        "after it); a standby's start ends once it has seen the holder, and takes either about",
        "1 ms or about 11 ms, on the cluster and on the single node alike (a 10 ms step in",
        "the start, not the network): the fast starts (within 5 ms of the fastest) are",
        "compared on their own.",
        "",
        "| start | median | fastest | slowest | median of the fast starts (how many) "
        "| cluster − single node: fast starts' medians / fastest |",
        "|---|---|---|---|---|---|",
    ]
    rows = [
        ("cluster, new bot", signed(new_added)),
        ("single node, new bot", ""),
        ("cluster, standby of a held bot", signed(standby_added)),
        ("single node, standby of a held bot", ""),
        ("discovery's commands sent by redis-py (new connections)", ""),
        ("redis-py RedisCluster(...) construction", ""),
        ("redis-py RedisCluster(...) + first GET", ""),
        ("redis-py Redis(...) + first PING, single node", ""),
    ]
    for name, extra in rows:
        runs = starts[name]
        quick = fast(name)
        lines.append(
            f"| {name} | {ms(smed[name])} | {ms(min(runs))} | {ms(max(runs))} "
            f"| {ms(statistics.median(quick))} ({len(quick)} of {len(runs)}) | {extra} |"
        )

    single_own_ping = med["single node: quantshift PING"]
    single_names = {
        "save_state (fenced write)": "single node: save_state (fenced write)",
        "save_position (fenced write)": "single node: save_position (fenced write)",
        f"load_positions ({POSITIONS} positions)": f"single node: load_positions ({POSITIONS} "
        "positions)",
    }

    def verdict(ratio: float, target: float) -> str:
        if ratio <= target:
            return f"met ({ratio:.2f}×)"
        return f"MISSED ({ratio:.2f}×, {(ratio / target - 1) * 100:.0f} % over)"

    verdicts = []
    for name, ratio, target in targets:
        strict = med[name] / own_ping
        single_strict = med[single_names[name]] / single_own_ping
        verdicts.append(
            f"- {name} ≤ {target:g}× the PING to the owner: against redis-py's PING "
            f"{verdict(ratio, target)}; against this library's own PING on the same connection "
            f"(the fastest PING to the owner) {verdict(strict, target)}, single node "
            f"{single_strict:.2f}×."
        )
    lines += [
        "",
        "Targets:",
        "",
        *verdicts,
        "- Discovery at start (no target set): what the cluster adds to a standby's start, "
        f"{signed(standby_added)} (fast starts' medians / fastest), to a new bot's "
        f"{signed(new_added)}; "
        "redis-py RedisCluster(...) construction "
        f"{ms(smed['redis-py RedisCluster(...) construction'])}.",
    ]
    single_write = med["single node: save_state (fenced write)"] / single_ping
    single_load = med[f"single node: load_positions ({POSITIONS} positions)"] / single_ping
    single_changed = (
        med[f"single node: load_positions ({POSITIONS} positions, one changed)"] / single_ping
    )
    changed_trips = trips[f"load_positions ({POSITIONS}, one changed)"][0]
    write_usec = trips["save_state"][2]
    lines += [
        "",
        "Reading the figures: each against its own node's redis-py PING, the cluster bot's",
        f"save_state is {write / ping:.2f}× and the single node's {single_write:.2f}×; "
        f"load_positions {load / ping:.2f}× and {single_load:.2f}×. After",
        "discovery every command goes straight to the owner on an ordinary connection, one",
        "round trip, nothing sent to the other primaries. redis-py's PING is mostly Python; "
        "this library's PING on the same",
        f"node is {own_ping / ping:.2f}× of it, and against that PING a fenced write is "
        f"{write / own_ping:.2f}× (the script's {write_usec:.0f} µs on the server, and the JSON "
        "encoding).",
        f"The {LOAD_TARGET:.0f}× target is "
        f"{'met' if load <= LOAD_TARGET * ping else 'MISSED'} by a repeated load_positions: "
        "nothing changed since the manager's last load",
        "(no invalidation on its tracked connection), one round trip. A load right after",
        f"another client changed a position reads the {POSITIONS} again: "
        f"{changed_trips:.0f} round trips, {changed / ping:.1f}× the",
        f"PING ({single_changed:.1f}× on the single node): the server's reads and the decoding "
        f"of the {POSITIONS} positions, as on one node.",
        "RedisCluster(...) reads a seed's CLUSTER SLOTS and then the server's whole `COMMAND`",
        "table (to find the keys of any command), both parsed in Python: the `COMMAND` reply is",
        "most of its construction time (cProfile: about three quarters).",
    ]
    if warnings:
        lines += ["", "Start-up warnings (the bench's throwaway servers): " + "; ".join(warnings)]
    commit = (
        args.commit
        or subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    )
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines += [
        "",
        f"quantshift_core {quantshift_core.__version__} (release build), redis-py "
        f"{redis.__version__}, CPython {platform.python_version()}, {redis_version()}, "
        f"loopback, {os.cpu_count()} vCPUs shared with other work (load average "
        f"{load_avg:.1f} at the end); {time.strftime('%Y-%m-%d')}, commit {commit}:",
        "",
        "```bash",
        "bash scripts/bench_cluster.sh --write BENCHMARKS.md",
        "```",
        "",
    ]
    return "\n".join(lines)


def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    version = out.split("v=")[1].split()[0] if "v=" in out else "?"
    return f"Redis {version}"


def write_section(path: str, section: str) -> None:
    """Replaces the section (up to the next `## ` heading, or its `### Rust core`
    subsection, which is kept) or appends it."""
    existing = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    lines = existing.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == SECTION), None)
    if start is None:
        joined = existing.rstrip("\n") + ("\n\n" if existing.strip() else "") + section
    else:
        end = next(
            (
                i
                for i in range(start + 1, len(lines))
                if lines[i].startswith("## ") or lines[i].startswith("### Rust core")
            ),
            len(lines),
        )
        rest = "".join(lines[end:])
        joined = "".join(lines[:start]) + section + ("\n" + rest if rest else "")
    with open(path, "w", encoding="utf-8") as f:
        f.write(joined.rstrip("\n") + "\n")


if __name__ == "__main__":
    sys.exit(main())
