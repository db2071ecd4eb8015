"""Every method of the Python StateManager against a real redis-server."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time

import pytest
import redis

import quantshift_core
from quantshift_core import (
    CorruptDataError,
    InvalidInputError,
    NotPrimaryError,
    NotReplicatedError,
    RedisUnavailableError,
    StateManager,
    StateManagerError,
)

from conftest import ManagerFactory

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")


def test_properties_and_repr(primary: StateManager, bot_name: str, redis_url: str):
    assert primary.bot_name == bot_name
    host_pid = primary.instance_id.split(":")
    assert host_pid[1].split(".")[0].isdigit()
    assert isinstance(primary.epoch, int) and primary.epoch >= 1
    assert primary.startup_warnings == [] or all(
        isinstance(w, str) for w in primary.startup_warnings
    )
    text = repr(primary)
    assert bot_name in text and "role=primary" in text and redis_url in text
    assert isinstance(primary, quantshift_core._quantshift_core.StateManager)


def test_constructor_takes_a_free_lease_before_returning(
    make_manager: ManagerFactory, bot_name: str
):
    # The constructor's attempt races the lease thread's first one; either way the instance
    # is primary on return. Many bots, to meet the race.
    for n in range(60):
        manager = make_manager(f"{bot_name}-{n}")
        assert manager.is_primary(), n
        manager.close()
    standby = make_manager(f"{bot_name}-59")
    other = make_manager(f"{bot_name}-59")
    assert standby.is_primary() != other.is_primary()


def test_save_and_load_state_sets_last_update(primary: StateManager, r: redis.Redis, bot_name):
    state = {"strategy": "moving_average", "daily_pnl": 150.50, "n": [1, 2.5, None, True]}
    assert primary.save_state(state) is None
    assert ISO.match(state["last_update"])
    stored = json.loads(r.get(f"bot:{bot_name}:state"))
    assert stored == state
    assert primary.load_state() == state
    ttl = r.ttl(f"bot:{bot_name}:state")
    assert 3500 < ttl <= 3600


def test_values_round_trip_exactly(primary: StateManager):
    floats = [0.1, 1 / 3, 1e-300, 1.7976931348623157e308, -0.0, 5e-324, 2.0, 123456789.123456789]
    ints = [0, -1, 2**63 - 1, -(2**63), 2**64 - 1]
    value = {"floats": floats, "ints": ints, "s": "ünï \u2603 \n\"'", "t": (1, "a"), "e": {}}
    primary.save_state(dict(value))
    loaded = primary.load_state()
    assert loaded is not None
    assert [x.hex() for x in loaded["floats"]] == [x.hex() for x in floats]
    assert all(type(x) is float for x in loaded["floats"])
    assert loaded["ints"] == ints and all(type(x) is int for x in loaded["ints"])
    assert loaded["s"] == value["s"] and loaded["t"] == [1, "a"] and loaded["e"] == {}


def test_update_state_merges(primary: StateManager):
    primary.save_state({"a": 1, "b": 2})
    merged = primary.update_state({"b": 3, "c": [4]})
    assert {k: merged[k] for k in "abc"} == {"a": 1, "b": 3, "c": [4]}
    assert primary.load_state() == merged


def test_load_state_when_absent(primary: StateManager):
    assert primary.load_state() is None


def test_positions(primary: StateManager, r: redis.Redis, bot_name: str):
    data = {"quantity": 10, "entry_price": 150.00, "stop_loss": 145.00}
    assert primary.save_position("AAPL", data) is None
    assert ISO.match(data["last_update"])
    for symbol in ["BTC/USD", "ES:FUT", "日本株", "a*b?[c]"]:
        primary.save_position(symbol, {"quantity": 1})
    positions = primary.load_positions()
    assert isinstance(positions, dict)
    assert set(positions) == {"AAPL", "BTC/USD", "ES:FUT", "日本株", "a*b?[c]"}
    assert positions["AAPL"] == data
    assert r.exists(f"bot:{bot_name}:position:ES:FUT")
    assert 86000 < r.ttl(f"bot:{bot_name}:position:AAPL") <= 86400
    assert primary.clear_position("ES:FUT") is True
    assert primary.clear_position("ES:FUT") is False
    assert "ES:FUT" not in primary.load_positions()


def test_predecessor_positions_are_found(make_manager: ManagerFactory, r: redis.Redis, bot_name):
    # Written by the predecessor: no index entry.
    r.set(f"bot:{bot_name}:position:MSFT", json.dumps({"quantity": 3, "entry_price": 300.0}))
    manager = make_manager()
    assert manager.wait_until_primary(5)
    assert manager.load_positions()["MSFT"]["quantity"] == 3


def test_apply_fill(primary: StateManager):
    assert primary.apply_fill("AAPL", 10, 100.0, "f1") == primary.load_positions()["AAPL"]
    after = primary.apply_fill("AAPL", 10, 110.0, "f2")
    assert after is not None and after["quantity"] == 20 and after["entry_price"] == 105.0
    again = primary.apply_fill("AAPL", 10, 110.0, "f2")  # a fill id seen before: ignored
    assert again is not None and again["quantity"] == 20
    reduced = primary.apply_fill("AAPL", -5, 120.0)
    assert reduced is not None and reduced["quantity"] == 15
    assert reduced["realized_pnl"] == pytest.approx(75.0)
    flipped = primary.apply_fill("AAPL", -20, 130.0, fill_id="f3")
    assert flipped is not None and flipped["quantity"] == -5 and flipped["entry_price"] == 130.0
    assert primary.apply_fill("AAPL", 5, 125.0, "f4") is None
    assert "AAPL" not in primary.load_positions()


def test_sync_positions(primary: StateManager):
    primary.save_position("AAPL", {"quantity": 10, "entry_price": 150.0})
    primary.save_position("MSFT", {"quantity": 5, "entry_price": 300.0})
    primary.save_position("GOOG", {"quantity": 1, "entry_price": 100.0})
    report = primary.sync_positions(
        {
            "AAPL": {"quantity": 10, "entry_price": 150.0},
            "MSFT": {"quantity": 7, "entry_price": 301.0},
            "TSLA": {"quantity": 2, "entry_price": 200.0},
        }
    )
    assert {k: report[k] for k in ("inserted", "updated", "deleted", "unchanged")} == {
        "inserted": 1,
        "updated": 1,
        "deleted": 1,
        "unchanged": 1,
    }
    diffs = report["differences"]
    assert diffs["TSLA"]["change"] == "inserted" and diffs["TSLA"]["before"] is None
    assert diffs["MSFT"]["change"] == "updated" and diffs["MSFT"]["before"]["quantity"] == 5
    assert diffs["GOOG"]["change"] == "deleted" and diffs["GOOG"]["after"] is None
    positions = primary.load_positions()
    assert set(positions) == {"AAPL", "MSFT", "TSLA"} and positions["MSFT"]["quantity"] == 7


def test_heartbeat_writes_the_heartbeat_key(primary: StateManager, r: redis.Redis, bot_name):
    r.delete(f"bot:{bot_name}:heartbeat")
    assert primary.heartbeat() is None
    beat = r.get(f"bot:{bot_name}:heartbeat")
    assert beat is not None and beat.startswith(time.strftime("%Y-", time.gmtime()))
    assert 0 < r.ttl(f"bot:{bot_name}:heartbeat") <= 60


def test_standby_is_fenced_and_takes_over(make_manager: ManagerFactory, r: redis.Redis, bot_name):
    first = make_manager()
    second = make_manager()
    assert first.is_primary() and not second.is_primary()
    assert second.epoch is None
    first.save_state({"owner": "first"})
    first.save_position("AAPL", {"quantity": 1})
    for write in (
        lambda: second.save_state({"owner": "second"}),
        lambda: second.update_state({"owner": "second"}),
        lambda: second.save_position("AAPL", {"quantity": 2}),
        lambda: second.clear_position("AAPL"),
        lambda: second.apply_fill("AAPL", 1, 1.0),
        lambda: second.sync_positions({}),
    ):
        with pytest.raises(NotPrimaryError):
            write()
    assert json.loads(r.get(f"bot:{bot_name}:state"))["owner"] == "first"
    assert second.load_positions()["AAPL"]["quantity"] == 1  # reads work on a standby
    assert second.wait_until_primary(timeout=0.2) is False
    first.close()
    started = time.monotonic()
    assert second.wait_until_primary(timeout=5)
    assert time.monotonic() - started < 0.25
    with pytest.raises(NotPrimaryError):
        first.save_state({"owner": "first again"})
    loaded = second.load_state()
    assert loaded is not None and loaded["owner"] == "first" and "shutdown_time" in loaded


def test_wait_until_primary_timeout(make_manager: ManagerFactory):
    first = make_manager()
    second = make_manager()
    assert first.is_primary()
    started = time.monotonic()
    assert second.wait_until_primary(0.3) is False
    assert 0.25 < time.monotonic() - started < 1.5
    assert second.wait_until_primary(0) is False


def test_wait_until_primary_releases_the_gil(make_manager: ManagerFactory):
    first = make_manager()
    second = make_manager()
    assert first.is_primary()
    ticks = []
    waiter = threading.Thread(target=second.wait_until_primary, args=(1.0,))
    waiter.start()
    started = time.monotonic()
    while waiter.is_alive() and time.monotonic() - started < 5:
        ticks.append(time.monotonic())
        time.sleep(0.01)
    waiter.join(5)
    assert len(ticks) > 30  # this thread kept running while the other one waited


def test_shutdown_handlers_and_context_manager(make_manager: ManagerFactory, caplog):
    ran: list[str] = []
    manager = make_manager()

    def failing() -> None:
        ran.append("failing")
        raise RuntimeError("broker unreachable")

    manager.register_shutdown_handler(lambda: ran.append("first"))
    manager.register_shutdown_handler(failing)
    manager.register_shutdown_handler(lambda: ran.append("last"))
    with pytest.raises(TypeError):
        manager.register_shutdown_handler(42)  # type: ignore[arg-type]
    caplog.set_level(logging.ERROR, logger="quantshift_core")
    with manager as entered:
        assert entered is manager
        manager.save_state({"k": "v"})
    assert ran == ["first", "failing", "last"]
    assert manager.closed and not manager.is_primary() and "role=closed" in repr(manager)
    assert any("broker unreachable" in rec.getMessage() for rec in caplog.records)
    assert any("RuntimeError" in rec.getMessage() for rec in caplog.records)
    manager.close()  # a second close does nothing
    assert ran == ["first", "failing", "last"]


def test_shutdown_handlers_are_bounded_by_shutdown_timeout(make_manager: ManagerFactory):
    manager = make_manager(shutdown_timeout=0.3)
    manager.register_shutdown_handler(lambda: time.sleep(5))
    started = time.monotonic()
    manager.shutdown()
    assert time.monotonic() - started < 2


def test_redis_client(primary: StateManager, bot_name: str):
    client = primary.redis_client
    assert client is primary.redis_client
    assert client.ping()
    client.set(f"bot:{bot_name}:emergency_stop", "1")
    assert client.get(f"bot:{bot_name}:emergency_stop") == b"1"
    primary.close()


def test_logging_reaches_python(make_manager: ManagerFactory, caplog, bot_name):
    caplog.set_level(logging.DEBUG, logger="quantshift_core")
    manager = make_manager()
    manager.close()
    names = {rec.name for rec in caplog.records}
    assert all(n == "quantshift_core" or n.startswith("quantshift_core.") for n in names)
    messages = " ".join(rec.getMessage() for rec in caplog.records)
    assert "is now primary" in messages and bot_name in messages
    assert "released the primary lease" in messages


def test_no_password_anywhere(caplog, bot_name):
    from redis_server import RedisServer

    password = "s3cret-pw-do-not-print"
    caplog.set_level(logging.DEBUG, logger="quantshift_core")
    with RedisServer(password=password) as server:
        manager = StateManager(bot_name, server.url, lock_ttl=1.5, install_signal_handlers=False)
        try:
            assert manager.wait_until_primary(5)
            manager.save_state({"k": 1})
            assert password not in repr(manager) and ":***@" in repr(manager)
            assert manager.redis_client.ping()
        finally:
            manager.close()
        wrong = server.url.replace(password, "wrong-" + password)
        with pytest.raises(RedisUnavailableError) as caught:
            StateManager(bot_name, wrong, install_signal_handlers=False)
        assert password not in str(caught.value)
    assert caplog.records
    for rec in caplog.records:
        assert password not in rec.getMessage()


def test_eviction_policy_warning(bot_name, caplog):
    from redis_server import RedisServer

    with RedisServer("--maxmemory-policy", "allkeys-lru") as server:
        caplog.set_level(logging.WARNING, logger="quantshift_core")
        manager = StateManager(bot_name, server.url, install_signal_handlers=False)
        try:
            assert any("allkeys-lru" in w for w in manager.startup_warnings)
            assert any("allkeys-lru" in rec.getMessage() for rec in caplog.records)
        finally:
            manager.close()


def test_exception_hierarchy():
    assert issubclass(NotPrimaryError, StateManagerError)
    assert issubclass(RedisUnavailableError, StateManagerError)
    assert issubclass(RedisUnavailableError, ConnectionError)
    assert issubclass(InvalidInputError, StateManagerError)
    assert issubclass(InvalidInputError, ValueError)
    assert issubclass(CorruptDataError, StateManagerError)
    assert issubclass(CorruptDataError, ValueError)
    assert issubclass(NotReplicatedError, StateManagerError)
    assert issubclass(StateManagerError, Exception)
    assert not issubclass(NotPrimaryError, ValueError)
    assert StateManagerError.__module__ == "quantshift_core"


def test_load_positions_round_trips(make_manager: ManagerFactory, r: redis.Redis):
    # The default lock_ttl (30 s): no lease renewal falls inside the count.
    manager = make_manager(lock_ttl=30)
    for i in range(200):
        manager.save_position(f"SYM{i:03d}", {"quantity": i + 1, "entry_price": 1.5})
    r.mset({f"unrelated:{i}": "x" for i in range(5000)})

    def reads() -> int:
        return int(r.info("stats")["total_reads_processed"])

    best = float("inf")
    for _ in range(3):
        before = reads()
        for _ in range(20):
            positions = manager.load_positions()
        best = min(best, (reads() - before - 1) / 20)
    assert len(positions) == 200 and positions["SYM199"]["quantity"] == 200
    assert best <= 3, f"{best} round trips per load_positions"


def test_shutdown_handlers_may_write(make_manager: ManagerFactory, r: redis.Redis, bot_name):
    manager = make_manager()
    manager.save_state({"phase": "trading"})
    manager.save_position("AAPL", {"quantity": 10})

    def close_positions() -> None:
        assert manager.is_primary()  # the lease is released only after the handlers
        manager.clear_position("AAPL")
        manager.save_state({"phase": "flat"})

    manager.register_shutdown_handler(close_positions)
    manager.close()
    state = json.loads(r.get(f"bot:{bot_name}:state"))
    assert state["phase"] == "flat" and "shutdown_time" in state
    assert r.get(f"bot:{bot_name}:position:AAPL") is None
    assert r.get(f"bot:{bot_name}:primary_lock") is None


def random_text(rng) -> str:
    alphabet = "abcXYZ019 _-:/*?[]\"'\\\n\t\u00e9\u2603\U0001f600\x00"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


def random_value(rng, depth: int = 0):
    import math

    kinds = ["int", "float", "str", "bool", "none"] + (
        ["list", "tuple", "dict"] if depth < 4 else []
    )
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([rng.randint(-(2**63), 2**63 - 1), rng.randint(0, 2**64 - 1), 0, -1])
    if kind == "float":
        value = rng.choice(
            [rng.uniform(-1e6, 1e6), rng.random() * 10 ** rng.randint(-300, 300), -0.0, 5e-324]
        )
        return value if math.isfinite(value) else 1.0
    if kind == "str":
        return random_text(rng)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    items = [random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    if kind == "list":
        return items
    if kind == "tuple":
        return tuple(items)
    # Keys: any str, empty and non-ASCII included (kept unique by the index).
    return {f"{i}{random_text(rng)}": v for i, v in enumerate(items)}


def as_stored(value):
    """What comes back: tuples as lists, floats compared bit for bit."""
    if isinstance(value, (list, tuple)):
        return [as_stored(v) for v in value]
    if isinstance(value, dict):
        return {k: as_stored(v) for k, v in value.items()}
    if isinstance(value, float):
        return ("float", value.hex())
    return value


def test_random_values_round_trip_exactly(primary: StateManager):
    import random

    rng = random.Random(20251224)
    for n in range(200):
        state = {f"field{i}": random_value(rng) for i in range(rng.randint(1, 6))}
        primary.save_state(state)
        loaded = primary.load_state()
        assert loaded is not None
        assert as_stored(loaded) == as_stored(state), n


def test_lease_stalls(make_manager: ManagerFactory) -> None:
    """The lease thread's stall meter from Python: frozen, typed, counting."""
    primary = make_manager(lock_ttl=3.0)
    assert primary.wait_until_primary(5)
    time.sleep(1.0)
    stalls = primary.lease_stalls()
    assert isinstance(stalls, quantshift_core.LeaseStalls)
    assert stalls.tolerance_s == pytest.approx(0.2)
    assert stalls.dropped_records == 0
    for histogram in (stalls.wake_late, stalls.round_trip):
        assert isinstance(histogram, quantshift_core.StallHistogram)
        # A renewal every 100 ms.
        assert histogram.count >= 3, stalls
        assert sum(count for _, count in histogram.buckets) == histogram.count
        bounds = [bound for bound, _ in histogram.buckets]
        assert bounds[0] == pytest.approx(0.001) and bounds[-1] == math.inf
        assert bounds == sorted(bounds)
        assert 0 <= histogram.p50_s <= histogram.p99_s <= max(histogram.max_s, bounds[0])
        assert histogram.sum_s >= histogram.max_s >= 0
    as_dict = stalls.to_dict()
    assert as_dict["round_trip"]["count"] == stalls.round_trip.count
    assert set(as_dict) == {"wake_late", "round_trip", "tolerance_s", "dropped_records"}
    assert "LeaseStalls(" in repr(stalls)
    with pytest.raises(AttributeError):
        stalls.tolerance_s = 1.0  # type: ignore[misc]
    later = primary.lease_stalls()
    assert later.round_trip.count >= stalls.round_trip.count
