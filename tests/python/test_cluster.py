"""On a Redis Cluster of 3 primaries: ``StateManager("alpha", "redis+cluster://P1,P2")`` runs
the seed's usage unchanged (the hash-tagged key layout by default, each bot served by the
primary owning its slot), and ``quantshift-state status`` reads it there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from quantshift_core import InvalidInputError, StateManager

from redis_server import LocalCluster
from test_seed_usage import SEED_USAGE, run


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as started:
        yield started


def test_seed_usage_runs_unchanged_on_a_cluster(cluster: LocalCluster) -> None:
    done = run(cluster.url, SEED_USAGE)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Recovered state from: 20")
    assert lines[1] == "AAPL: 10 shares @ $150.0"
    assert lines[2] == "This instance is primary"
    r = cluster.client()
    state = json.loads(r.get("bot:{equity-bot}:state"))
    assert state["strategy"] == "moving_average" and state["daily_pnl"] == 150.5
    assert "shutdown_time" in state  # closed at interpreter exit
    assert r.get("bot:{equity-bot}:primary_lock") is None
    position = json.loads(r.get("bot:{equity-bot}:position:AAPL"))
    assert position["take_profit"] == 160.0 and position["quantity"] == 10
    assert r.get("bot:{equity-bot}:heartbeat") is not None
    # Nothing in the plain layout.
    assert r.get("bot:equity-bot:state") is None

    again = run(cluster.url, SEED_USAGE)
    assert again.returncode == 0, again.stderr
    assert "This instance is primary" in again.stdout


def test_bots_on_every_primary(cluster: LocalCluster) -> None:
    """Bots whose slots are on different primaries, each with its state and positions."""
    prefix = uuid.uuid4().hex[:8]
    names: dict[int, str] = {}
    for i in range(200):
        name = f"{prefix}-{i}"
        names.setdefault(cluster.owner_of(f"bot:{{{name}}}:state"), name)
        if len(names) == len(cluster.ports):
            break
    assert len(names) == len(cluster.ports), names
    managers = [
        StateManager(name, cluster.url, install_signal_handlers=False, lock_ttl=3)
        for name in names.values()
    ]
    try:
        for manager in managers:
            assert manager.key_layout == "hash_tagged"
            assert manager.wait_until_primary(5)
            manager.save_state({"bot": manager.bot_name})
            manager.save_position("ES", {"quantity": 2})
            filled = manager.apply_fill("ES", 1, 5000.0, "f-1")
            assert filled is not None and filled["quantity"] == 3
            manager.heartbeat()
        for manager in managers:
            state = manager.load_state()
            assert state is not None and state["bot"] == manager.bot_name
            assert manager.load_positions()["ES"]["quantity"] == 3
        # A standby of each takes over when its primary closes.
        standbys = [
            StateManager(m.bot_name, cluster.url, install_signal_handlers=False, lock_ttl=3)
            for m in managers
        ]
        try:
            for primary, standby in zip(managers, standbys):
                assert not standby.is_primary()
                primary.close()
                assert standby.wait_until_primary(5)
                assert standby.load_positions()["ES"]["quantity"] == 3
        finally:
            for standby in standbys:
                standby.close()
    finally:
        for manager in managers:
            manager.close()


def test_plain_layout_is_refused_on_a_cluster(cluster: LocalCluster) -> None:
    with pytest.raises(InvalidInputError, match="plain"):
        StateManager("alpha", cluster.url, key_layout="plain", install_signal_handlers=False)


def test_status_on_a_cluster(cluster: LocalCluster) -> None:
    name = f"status-{uuid.uuid4().hex[:8]}"
    with StateManager(name, cluster.url, install_signal_handlers=False) as manager:
        assert manager.wait_until_primary(5)
        manager.save_position("AAPL", {"quantity": 1})
        env = {k: v for k, v in os.environ.items() if "REDIS" not in k}
        done = subprocess.run(
            [sys.executable, "-m", "quantshift_core", "--url", cluster.url, "status", name]
            + ["--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        bot = json.loads(done.stdout)["bots"][0]
        assert bot["bot"] == name
        assert bot["primary"] == manager.instance_id
        assert bot["positions"] == 1


def test_redis_client_on_a_cluster_is_a_cluster_client(cluster: LocalCluster) -> None:
    """``redis_client`` follows the URL: on a cluster, redis-py's ``RedisCluster`` on the
    same seed nodes, which reads the bot's keys wherever their slot lives."""
    from redis.cluster import RedisCluster

    name = f"client-{uuid.uuid4().hex[:8]}"
    manager = StateManager(name, cluster.url, install_signal_handlers=False)
    try:
        assert manager.wait_until_primary(timeout=5)
        manager.save_state({"mode": "cluster"})
        client = manager.redis_client
        assert isinstance(client, RedisCluster)
        assert json.loads(client.get(f"bot:{{{name}}}:state"))["mode"] == "cluster"
    finally:
        manager.close()
