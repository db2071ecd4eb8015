"""A clear error for every bad input (docs/contract.md §1, §3, §6, §7), raised before anything is
sent: the keys in Redis are checked to be unchanged."""

from __future__ import annotations

import json
import math

import pytest
import redis

from quantshift_core import (
    CorruptDataError,
    InvalidInputError,
    NotPrimaryError,
    RedisUnavailableError,
    StateManager,
)

from conftest import ManagerFactory
from redis_server import free_port


# §1: names that could reach other keys
@pytest.mark.parametrize("name", ["", "a:b", "tab\there", "nl\n", "x" * 257, "del\x7f"])
def test_unsafe_bot_names(name: str, redis_url: str):
    with pytest.raises(InvalidInputError):
        StateManager(name, redis_url, install_signal_handlers=False)


@pytest.mark.parametrize("symbol", ["", "a\nb", "\x00", "x" * 257])
def test_unsafe_symbols(primary: StateManager, symbol: str, r: redis.Redis, bot_name: str):
    before = sorted(r.keys(f"bot:{bot_name}:*"))
    for call in (
        lambda: primary.save_position(symbol, {"quantity": 1}),
        lambda: primary.clear_position(symbol),
        lambda: primary.apply_fill(symbol, 1, 1.0),
        lambda: primary.sync_positions({symbol: {"quantity": 1}}),
    ):
        with pytest.raises(InvalidInputError):
            call()
    assert sorted(r.keys(f"bot:{bot_name}:*")) == before


def test_glob_characters_do_not_reach_other_bots(make_manager: ManagerFactory, bot_name: str):
    other = make_manager(bot_name + "x")
    other.save_position("OTHER", {"quantity": 1})
    globby = make_manager(bot_name[:-1] + "*")
    assert globby.wait_until_primary(5)
    assert "OTHER" not in globby.load_positions()


# §2 / §6: options
@pytest.mark.parametrize(
    "option",
    [
        {"lock_ttl": 0},
        {"lock_ttl": -1},
        {"lock_ttl": math.nan},
        {"lock_ttl": math.inf},
        {"state_ttl": 0},
        {"position_ttl": -5},
        {"heartbeat_ttl": math.nan},
        {"shutdown_timeout": 0},
        {"poll_interval": -0.1},
        {"lock_ttl": 3, "renew_deadline": 4},  # lock_ttl > renew_deadline violated
        {"lock_ttl": 3, "renew_deadline": 0.9},  # renew_deadline > lock_ttl / 3 violated
        {"lock_ttl": 1e300},
    ],
)
def test_bad_options(option: dict, redis_url: str, bot_name: str):
    with pytest.raises(InvalidInputError):
        StateManager(bot_name, redis_url, install_signal_handlers=False, **option)


def test_bad_option_types(redis_url: str, bot_name: str):
    with pytest.raises(TypeError):
        StateManager(bot_name, redis_url, lock_ttl="30")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        StateManager(42, redis_url)  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/0", "127.0.0.1:6380", "redis://[bad"])
def test_bad_urls(url: str, bot_name: str):
    with pytest.raises(InvalidInputError):
        StateManager(bot_name, url, install_signal_handlers=False)


def test_unreachable_redis_is_a_connection_error(bot_name: str):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with pytest.raises(RedisUnavailableError) as caught:
        StateManager(bot_name, url, install_signal_handlers=False)
    assert isinstance(caught.value, ConnectionError)


def test_redis_going_away_is_a_connection_error(bot_name: str):
    from redis_server import RedisServer

    server = RedisServer()
    manager = StateManager(bot_name, server.url, lock_ttl=1.5, install_signal_handlers=False)
    try:
        assert manager.is_primary()
        server.stop()
        with pytest.raises(RedisUnavailableError):
            manager.load_state()
        with pytest.raises(RedisUnavailableError):
            manager.save_state({"v": 1})
        # Closing reports that the lease could not be released (it expires by itself).
        with pytest.raises(RedisUnavailableError):
            manager.close()
        assert manager.closed and not manager.is_primary()
    finally:
        manager.close()
        server.stop()


# §3: fenced writes
def test_standby_write_changes_nothing(make_manager: ManagerFactory, r: redis.Redis, bot_name):
    first = make_manager()
    first.save_state({"v": 1})
    second = make_manager()
    state = {"v": 2}
    with pytest.raises(NotPrimaryError):
        second.save_state(state)
    assert "last_update" not in state
    assert json.loads(r.get(f"bot:{bot_name}:state"))["v"] == 1


def test_deposed_primary_is_refused(make_manager: ManagerFactory, r: redis.Redis, bot_name: str):
    first = make_manager()
    assert first.is_primary()
    # Another instance takes the lease behind our back (as after a long pause).
    r.set(f"bot:{bot_name}:primary_lock", "someone-else:1:abc", px=60000)
    with pytest.raises(NotPrimaryError):
        # Until the next renewal it still believes it is primary; the script refuses.
        for _ in range(3):
            first.save_state({"v": "stale"})
    assert r.get(f"bot:{bot_name}:state") is None


# §7: values JSON cannot carry, refused before anything is sent
@pytest.mark.parametrize(
    "value, error",
    [
        ({"x": math.nan}, InvalidInputError),
        ({"x": math.inf}, InvalidInputError),
        ({"x": [1, -math.inf]}, InvalidInputError),
        ({"x": 2**64}, InvalidInputError),
        ({"x": object()}, TypeError),
        ({"x": {1, 2}}, TypeError),
        ({"x": b"bytes"}, TypeError),
        ({1: "int key"}, TypeError),
        ({("a",): "tuple key"}, TypeError),
        ({"x": {"y": {None: 1}}}, TypeError),
    ],
)
def test_values_json_cannot_carry(
    primary: StateManager, value: dict, error: type, r: redis.Redis, bot_name: str
):
    with pytest.raises(error):
        primary.save_state(value)
    with pytest.raises(error):
        primary.save_position("AAPL", value)
    with pytest.raises(error):
        primary.update_state(value)
    with pytest.raises(error):
        primary.sync_positions({"AAPL": value})
    assert r.get(f"bot:{bot_name}:state") is None
    assert r.get(f"bot:{bot_name}:position:AAPL") is None
    assert issubclass(InvalidInputError, ValueError)


def test_self_referencing_value(primary: StateManager):
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(InvalidInputError):
        primary.save_state(loop)


def test_error_names_the_place(primary: StateManager):
    with pytest.raises(InvalidInputError, match=r"\[\"orders\"\]\[1\]\[\"price\"\]"):
        primary.save_state({"orders": [{"price": 1.0}, {"price": math.nan}]})


@pytest.mark.parametrize("not_a_dict", [[("a", 1)], "text", None, 3])
def test_arguments_must_be_dicts(primary: StateManager, not_a_dict: object):
    with pytest.raises(TypeError):
        primary.save_state(not_a_dict)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        primary.save_position("AAPL", not_a_dict)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        primary.sync_positions(not_a_dict)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "quantity, price",
    [(math.nan, 1.0), (1.0, math.nan), (math.inf, 1.0), (1.0, -math.inf), (0.0, 1.0)],
)
def test_bad_fills(primary: StateManager, quantity: float, price: float, r, bot_name):
    with pytest.raises(InvalidInputError):
        primary.apply_fill("AAPL", quantity, price)
    assert r.get(f"bot:{bot_name}:position:AAPL") is None


def test_bad_fill_types_and_ids(primary: StateManager):
    with pytest.raises(TypeError):
        primary.apply_fill("AAPL", "10", 1.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        primary.apply_fill("AAPL", 1, 1.0, fill_id="")


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"text"', "42", "{truncated"])
def test_corrupt_stored_values(primary: StateManager, r: redis.Redis, bot_name: str, raw: str):
    r.set(f"bot:{bot_name}:state", raw)
    with pytest.raises(CorruptDataError):
        primary.load_state()
    primary.save_position("AAPL", {"quantity": 1})
    r.set(f"bot:{bot_name}:position:AAPL", raw)
    with pytest.raises(CorruptDataError):
        primary.load_positions()
    assert issubclass(CorruptDataError, ValueError)


def test_callbacks_must_be_callable(primary: StateManager):
    for register in (primary.on_promoted, primary.on_demoted, primary.register_shutdown_handler):
        with pytest.raises(TypeError):
            register("not callable")  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [-1, math.nan, math.inf])
def test_bad_wait_timeout(primary: StateManager, timeout: float):
    with pytest.raises(InvalidInputError):
        primary.wait_until_primary(timeout)


def test_oversized_values_are_refused_before_sending(primary: StateManager, r, bot_name: str):
    huge = {"blob": "x" * (16 * 1024 * 1024 + 1)}
    with pytest.raises(InvalidInputError, match="over the limit"):
        primary.save_state(huge)
    with pytest.raises(InvalidInputError, match="over the limit"):
        primary.save_position("AAPL", huge)
    assert r.get(f"bot:{bot_name}:state") is None
    assert r.get(f"bot:{bot_name}:position:AAPL") is None


EXIT_WITH_REDIS_GONE = """
import os, signal, sys
from quantshift_core import StateManager

state = StateManager("exit-bot", sys.argv[1], lock_ttl=2, command_timeout=0.5,
                     connect_timeout=0.5)
state.save_state({"a": 1})
os.kill(int(sys.argv[2]), signal.SIGKILL)  # redis-server gone for good
print("redis gone", flush=True)
"""


def test_closing_at_exit_with_redis_gone_is_one_warning_line():
    import subprocess
    import sys

    from redis_server import RedisServer

    with RedisServer("--appendonly", "yes") as server:  # no persistence warning at start
        done = subprocess.run(
            [sys.executable, "-c", EXIT_WITH_REDIS_GONE, server.url, str(server.process.pid)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "redis gone\n"
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "at exit failed" in lines[0] and "RedisUnavailableError" in lines[0]
    assert "exit-bot" in lines[0]


def test_key_of_another_redis_type_is_corrupt_data_naming_it(
    primary: StateManager, r: redis.Redis, bot_name: str
):
    state_key = f"bot:{bot_name}:state"
    r.rpush(state_key, "stored by hand")
    with pytest.raises(CorruptDataError, match=f"{state_key} holds a Redis list"):
        primary.load_state()
    with pytest.raises(CorruptDataError, match=f"{state_key} holds a Redis list"):
        primary.update_state({"x": 1})
    assert r.lrange(state_key, 0, -1) == ["stored by hand"]  # left alone
    position_key = f"bot:{bot_name}:position:AAPL"
    primary.save_position("AAPL", {"quantity": 1, "entry_price": 10.0})
    r.delete(position_key)
    r.hset(position_key, "quantity", "1")
    with pytest.raises(CorruptDataError, match=f"{position_key} holds a Redis hash"):
        primary.load_positions()
    with pytest.raises(CorruptDataError, match=f"{position_key} holds a Redis hash"):
        primary.apply_fill("AAPL", 1, 10.0, fill_id="f1")


def test_fast_failover_is_a_bool_keyword(redis_url: str, bot_name: str):
    # Without fast failover a first start leads renew_deadline (+ 2 %) after its claim.
    with StateManager(
        bot_name, redis_url, install_signal_handlers=False, fast_failover=False, lock_ttl=1.5
    ) as m:
        assert m.wait_until_primary(5)
    with pytest.raises(TypeError):
        StateManager(bot_name, redis_url, fast_failover="no")  # type: ignore[arg-type]
