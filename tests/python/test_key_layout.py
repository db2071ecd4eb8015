"""The ``key_layout`` option: ``hash_tagged`` names every key ``bot:{<name>}:...`` (one Redis
Cluster slot per bot), ``plain`` (the default on one server) ``bot:<name>:...``; bad values
raise ``InvalidInputError`` before anything is sent."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis

from quantshift_core import InvalidInputError, StateManager
from quantshift_core.aio import AsyncStateManager

from conftest import ManagerFactory


def test_hash_tagged_layout_writes_tagged_keys(
    make_manager: ManagerFactory, bot_name: str, r: redis.Redis
):
    manager = make_manager(key_layout="hash_tagged")
    assert manager.key_layout == "hash_tagged"
    assert manager.wait_until_primary(5)
    manager.save_state({"strategy": "tagged"})
    manager.save_position("AAPL", {"quantity": 10})
    manager.heartbeat()
    assert json.loads(r.get(f"bot:{{{bot_name}}}:state"))["strategy"] == "tagged"
    assert json.loads(r.get(f"bot:{{{bot_name}}}:position:AAPL"))["quantity"] == 10
    assert r.smembers(f"bot:{{{bot_name}}}:positions") == {"AAPL"}
    assert r.get(f"bot:{{{bot_name}}}:primary_lock") is not None
    assert r.get(f"bot:{{{bot_name}}}:heartbeat") is not None
    # Nothing in the plain layout.
    assert r.keys(f"bot:{bot_name}:*") == []


def test_the_default_is_plain_on_one_server(
    make_manager: ManagerFactory, bot_name: str, r: redis.Redis
):
    manager = make_manager()
    assert manager.key_layout == "plain"
    assert manager.wait_until_primary(5)
    manager.save_state({"strategy": "plain"})
    assert r.get(f"bot:{bot_name}:state") is not None
    assert make_manager(bot_name + "-2", key_layout="plain").key_layout == "plain"


@pytest.mark.parametrize("spelling", ["hash-tagged", "tagged", " Hash_Tagged "])
def test_other_spellings(make_manager: ManagerFactory, spelling: str):
    assert make_manager(key_layout=spelling).key_layout == "hash_tagged"


def test_layouts_do_not_see_each_other(make_manager: ManagerFactory, bot_name: str):
    tagged = make_manager(key_layout="hash_tagged")
    assert tagged.wait_until_primary(5)
    tagged.save_state({"where": "tagged"})
    tagged.close()
    plain = make_manager()
    assert plain.wait_until_primary(5)
    assert plain.load_state() is None
    plain.close()
    again = make_manager(key_layout="hash_tagged")
    assert again.wait_until_primary(5)
    state = again.load_state()
    assert state is not None and state["where"] == "tagged"


@pytest.mark.parametrize("layout", ["cluster", "", "PLAIN_", "hash tagged"])
def test_unknown_layout(redis_url: str, bot_name: str, layout: str, r: redis.Redis):
    with pytest.raises(InvalidInputError, match="key layout"):
        StateManager(bot_name, redis_url, key_layout=layout, install_signal_handlers=False)
    assert r.keys(f"*{bot_name}*") == []


def test_layout_of_the_wrong_type(redis_url: str, bot_name: str):
    with pytest.raises(TypeError):
        StateManager(bot_name, redis_url, key_layout=1, install_signal_handlers=False)  # type: ignore[arg-type]


def test_braces_are_refused_in_the_tagged_layout(redis_url: str, bot_name: str, r: redis.Redis):
    with pytest.raises(InvalidInputError, match="hash-tagged"):
        StateManager(
            bot_name + "{x}", redis_url, key_layout="hash_tagged", install_signal_handlers=False
        )
    assert r.keys(f"*{bot_name}*") == []


def test_plain_is_refused_with_a_cluster_url(bot_name: str):
    # Refused before connecting: nothing listens on port 1.
    with pytest.raises(InvalidInputError, match="plain"):
        StateManager(
            bot_name,
            "redis+cluster://127.0.0.1:1",
            key_layout="plain",
            install_signal_handlers=False,
        )


def test_async_manager_takes_the_layout(redis_url: str, bot_name: str, r: redis.Redis):
    async def main() -> None:
        async with AsyncStateManager(
            bot_name, redis_url, key_layout="hash_tagged", install_signal_handlers=False
        ) as sm:
            assert sm.sync_manager.key_layout == "hash_tagged"
            await sm.save_position("ES", {"quantity": 1})
        with pytest.raises(InvalidInputError):
            await AsyncStateManager.create(
                bot_name, redis_url, key_layout="nope", install_signal_handlers=False
            )

    asyncio.run(main())
    assert r.get(f"bot:{{{bot_name}}}:position:ES") is not None
