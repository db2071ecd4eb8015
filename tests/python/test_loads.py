"""Loads: positions read in MGET chunks on the server and decoded straight into dicts; loads
that Redis says changed nothing hand out copies of the last one; values that are not one JSON
object are still refused with CorruptDataError."""

from __future__ import annotations

import json

import pytest
import redis

from quantshift_core import CorruptDataError, StateManager

POSITION = {"quantity": 10, "entry_price": 150.0, "stop_loss": 145.0, "take_profit": 160.0}


def test_many_positions_across_chunks(primary: StateManager, r: redis.Redis, bot_name: str):
    # More than one MGET chunk (1000 keys) on the server, one expired in between.
    primary.sync_positions({f"S{i:04d}": dict(POSITION) for i in range(2500)})
    r.delete(f"bot:{bot_name}:position:S1234")
    loaded = primary.load_positions()
    assert len(loaded) == 2499
    assert "S1234" not in loaded
    assert loaded["S0000"]["quantity"] == 10 and loaded["S2499"]["take_profit"] == 160.0


def test_large_state_round_trips(primary: StateManager):
    state = {"history": [{"id": i, "price": 150.25, "note": 'é"}{'} for i in range(20_000)]}
    primary.save_state(state)
    assert primary.load_state() == state


@pytest.mark.parametrize(
    "raw", ['{}, "AAPL": {"quantity": 999}', '{"a": NaN}', '{"a": 1}}', '{"a": "}"} {}']
)
def test_a_value_posing_as_several_is_corrupt(
    primary: StateManager, r: redis.Redis, bot_name: str, raw: str
):
    primary.save_position("MSFT", {"quantity": 1})
    primary.save_position("AAPL", {"quantity": 2})
    r.set(f"bot:{bot_name}:position:MSFT", raw)
    with pytest.raises(CorruptDataError):
        primary.load_positions()
    r.set(f"bot:{bot_name}:state", raw)
    with pytest.raises(CorruptDataError):
        primary.load_state()


def test_values_decode_as_before(primary: StateManager, r: redis.Redis, bot_name: str):
    primary.save_position(
        "X", {"big": 2**63 - 1, "neg": -(2**63), "f": 0.1, "nested": [None, True]}
    )
    raw = json.loads(r.get(f"bot:{bot_name}:position:X") or b"{}")
    assert primary.load_positions()["X"] == raw


def test_unchanged_loads_are_independent_copies(primary: StateManager):
    primary.save_position("FLAT", dict(POSITION))
    primary.save_position("NESTED", {"quantity": 1, "legs": [{"qty": 1}], "meta": {"a": [1]}})
    for _ in range(3):
        first = primary.load_positions()
        first["FLAT"]["quantity"] = -1
        first["NESTED"]["legs"][0]["qty"] = -1
        first["NESTED"]["legs"].append("x")
        first["NESTED"]["meta"]["a"].append(2)
        first["EXTRA"] = {}
        again = primary.load_positions()
        assert again["FLAT"]["quantity"] == 10
        assert again["NESTED"]["legs"] == [{"qty": 1}]
        assert again["NESTED"]["meta"] == {"a": [1]}
        assert "EXTRA" not in again


def test_every_load_sees_changes_made_by_anyone(
    primary: StateManager, r: redis.Redis, bot_name: str, redis_url: str
):
    key = f"bot:{bot_name}:position:"
    primary.sync_positions({"A": {"quantity": 1}, "B": {"quantity": 2}})
    with StateManager(bot_name, redis_url, install_signal_handlers=False) as reader:
        for sm in (primary, reader):
            assert set(sm.load_positions()) == {"A", "B"}
            assert set(sm.load_positions()) == {"A", "B"}
        r.set(key + "A", '{"quantity": 7}')
        assert [sm.load_positions()["A"]["quantity"] for sm in (primary, reader)] == [7, 7]
        r.delete(key + "B")
        assert [set(sm.load_positions()) for sm in (primary, reader)] == [{"A"}, {"A"}]
        r.set(key + "B", '{"quantity": 3}')
        assert [sm.load_positions()["B"]["quantity"] for sm in (primary, reader)] == [3, 3]
        primary.apply_fill("A", 1, 100.0)
        assert [sm.load_positions()["A"]["quantity"] for sm in (primary, reader)] == [8, 8]
        r.flushdb()
        assert [sm.load_positions() for sm in (primary, reader)] == [{}, {}]


@pytest.mark.parametrize(
    "raw",
    [
        '{"big": 123456789012345678901234567890, "neg": -99999999999999999999}',
        '{"e19": 1e19, "whole": 12345678901234567890.0, "tiny": 5e-324}',
        '{"max": 1.7976931348623157e308, "min": -1.7976931348623157e308, "m1": -1.0}',
        '{"u64": 18446744073709551615, "i64": -9223372036854775808, "z": -0, "zf": -0.0}',
        '{"s": "\\u00e9\\ud83d\\ude00\\n\\"", "nested": {"a": [1, [2, {"b": null}]]}, "t": true}',
    ],
)
def test_stored_json_loads_as_json_loads_reads_it(
    primary: StateManager, r: redis.Redis, bot_name: str, raw: str
):
    primary.save_position("X", {"quantity": 1})
    primary.load_positions()
    r.set(f"bot:{bot_name}:position:X", raw)
    r.set(f"bot:{bot_name}:state", raw)
    expected = json.loads(raw)
    loaded = primary.load_positions()["X"]
    assert loaded == expected
    assert [type(v) for v in loaded.values()] == [type(v) for v in expected.values()]
    state = primary.load_state()
    assert state == expected
    assert [type(v) for v in state.values()] == [type(v) for v in expected.values()]
