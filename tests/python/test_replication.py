"""wait_replicas (NotReplicatedError), a Sentinel URL, and redis_client's connection rules."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis
import redis.sentinel

from quantshift_core import NotReplicatedError, StateManager

from redis_server import LOOPBACK, RedisServer, free_port


@pytest.fixture
def master_and_replica() -> Iterator[tuple[RedisServer, RedisServer]]:
    # No 5 s pause before the replica's first (diskless) sync.
    with RedisServer("--repl-diskless-sync-delay", "0") as master:
        with RedisServer("--replicaof", LOOPBACK, str(master.port)) as replica:
            give_up = time.monotonic() + 10
            while master.client().info("replication").get("slave0", {}).get("state") != "online":
                assert time.monotonic() < give_up, "the replica did not finish its first sync"
                time.sleep(0.05)
            yield master, replica


def test_writes_wait_for_replicas(master_and_replica, bot_name: str):
    master, replica = master_and_replica
    manager = StateManager(
        bot_name,
        master.url,
        lock_ttl=3,
        wait_replicas=1,
        wait_timeout=0.3,
        install_signal_handlers=False,
    )
    try:
        assert manager.wait_until_primary(5)
        manager.save_state({"v": 1})
        assert replica.client().get(f"bot:{bot_name}:state") is not None  # confirmed there
        os.kill(replica.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(NotReplicatedError):
                manager.save_state({"v": 2})
            assert time.monotonic() - started < 2
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
    finally:
        manager.close()


class Sentinel:
    def __init__(self, master_port: int) -> None:
        self.dir = tempfile.mkdtemp(prefix="qs-sentinel-")
        self.port = free_port()
        config = os.path.join(self.dir, "sentinel.conf")
        with open(config, "w") as f:
            f.write(
                f"bind {LOOPBACK}\nport {self.port}\ndir {self.dir}\n"
                f"sentinel monitor mymaster {LOOPBACK} {master_port} 1\n"
                "sentinel down-after-milliseconds mymaster 5000\n"
            )
        binary = shutil.which("redis-sentinel") or shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [binary, config, "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=2)
        give_up = time.monotonic() + 10
        while True:
            try:
                if client.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster"):
                    break
            except redis.exceptions.ConnectionError:
                pass
            assert time.monotonic() < give_up, "the Sentinel did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def test_sentinel_url_and_redis_client(bot_name: str):
    with RedisServer() as master:
        sentinel = Sentinel(master.port)
        try:
            url = f"redis+sentinel://{LOOPBACK}:{sentinel.port}/mymaster/0"
            manager = StateManager(bot_name, url, lock_ttl=3, install_signal_handlers=False)
            try:
                assert manager.wait_until_primary(5)
                manager.save_state({"through": "sentinel"})
                assert master.client().get(f"bot:{bot_name}:state") is not None
                client = manager.redis_client
                assert client.get(f"bot:{bot_name}:state") is not None
                assert isinstance(client.connection_pool, redis.sentinel.SentinelConnectionPool)
            finally:
                manager.close()
        finally:
            sentinel.stop()


def test_redis_client_uses_redis_password(bot_name: str, monkeypatch):
    password = "from-the-environment"
    with RedisServer(password=password) as server:
        monkeypatch.setenv("REDIS_PASSWORD", password)
        url = f"redis://{LOOPBACK}:{server.port}/0"  # no password in the URL
        manager = StateManager(bot_name, url, install_signal_handlers=False)
        try:
            assert manager.redis_client.ping()
            assert password not in repr(manager)
        finally:
            manager.close()
