"""Throwaway redis-server processes on free 127.0.0.1 ports (never 6379), for tests and demos:
one server (RedisServer), or a Redis Cluster of 3 primaries (LocalCluster)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

import redis
from redis.cluster import ClusterNode, RedisCluster

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A free TCP port on the loopback interface, other than Redis' default 6379."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port
    raise RuntimeError("no free loopback port found")


class RedisServer:
    """A redis-server on 127.0.0.1, stopped by stop() (or as a context manager)."""

    def __init__(self, *extra_args: str, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: run scripts/setup.sh")
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="qs-redis-")
        last_error = ""
        for _ in range(5):
            self.port = free_port()
            args = [
                binary,
                "--bind", LOOPBACK,
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", self.dir,
                "--maxmemory-policy", "noeviction",
            ]  # fmt: skip
            if password:
                args += ["--requirepass", password]
            args += list(extra_args)
            self.process = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            if self._wait_ready():
                return
            self.process.kill()
            out, _ = self.process.communicate(timeout=5)
            last_error = out[-2000:]
        raise RuntimeError(f"redis-server did not start: {last_error}")

    def _wait_ready(self) -> bool:
        client = self.client()
        give_up = time.monotonic() + 10
        while time.monotonic() < give_up:
            if self.process.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
            except redis.exceptions.ResponseError:
                return False
        return False

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{LOOPBACK}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(
            host=LOOPBACK,
            port=self.port,
            password=self.password,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=5,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_from_env_or_new() -> tuple[str, RedisServer | None]:
    """For examples: QUANTSHIFT_REDIS_URL when set, else a throwaway server."""
    url = os.environ.get("QUANTSHIFT_REDIS_URL")
    if url:
        return url, None
    server = RedisServer()
    return server.url, server


# A throwaway Redis Cluster of 3 primaries (no replicas): three ``redis-server
# --cluster-enabled yes`` processes (client and cluster-bus ports both picked free), joined with
# ``redis-cli --cluster create --cluster-replicas 0``, stopped and their directory removed by
# stop() (or as a context manager).
PRIMARIES = 3


class LocalCluster:
    """Three cluster-enabled redis-server processes owning every slot between them."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None or shutil.which("redis-cli") is None:
            raise RuntimeError("redis-server and redis-cli are needed: run scripts/setup.sh")
        self.dir = tempfile.mkdtemp(prefix="qs-cluster-")
        self.processes: list[subprocess.Popen[str]] = []
        self.ports: list[int] = []
        try:
            ports: set[int] = set()
            while len(ports) < 2 * PRIMARIES:
                ports.add(free_port())
            chosen = sorted(ports)
            for port, bus_port in zip(chosen[:PRIMARIES], chosen[PRIMARIES:]):
                self._spawn(binary, port, bus_port)
            for port in self.ports:
                self._wait_ping(port)
            nodes = [f"{LOOPBACK}:{port}" for port in self.ports]
            created = subprocess.run(
                ["redis-cli", "--cluster", "create", *nodes]
                + ["--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}")
            self._wait_ok()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, binary: str, port: int, bus_port: int) -> None:
        args = [
            binary,
            "--port", str(port),
            "--bind", LOOPBACK,
            "--cluster-enabled", "yes",
            "--cluster-port", str(bus_port),
            "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-node-timeout", "2000",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        self.processes.append(
            subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        self.ports.append(port)

    def _wait_ping(self, port: int) -> None:
        client = self.node_client(port)
        give_up = time.monotonic() + 10
        while time.monotonic() < give_up:
            try:
                if client.ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"cluster node on port {port} did not start")

    def _wait_ok(self) -> None:
        """Until every node says the cluster is ok and sees every slot assigned."""
        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            infos = [self.node_client(port).cluster("INFO") for port in self.ports]
            if all(
                i.get("cluster_state") == "ok" and int(i.get("cluster_slots_assigned", 0)) == 16384
                for i in infos
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("the cluster did not reach cluster_state:ok within 30 s")

    def node_client(self, port: int) -> redis.Redis:
        return redis.Redis(
            host=LOOPBACK,
            port=port,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=5,
        )

    @property
    def url(self) -> str:
        """The library's cluster URL with two of the three nodes as seeds."""
        seeds = ",".join(f"{LOOPBACK}:{port}" for port in self.ports[:2])
        return f"redis+cluster://{seeds}"

    def client(self) -> RedisCluster:
        """A redis-py cluster client, to look at what the library stored."""
        return RedisCluster(
            startup_nodes=[ClusterNode(LOOPBACK, port) for port in self.ports],
            decode_responses=True,
            socket_timeout=5,
        )

    def owner_of(self, key: str) -> int:
        """The port of the primary that serves ``key`` (the others answer MOVED)."""
        for port in self.ports:
            try:
                self.node_client(port).exists(key)
            except redis.exceptions.ResponseError:
                continue
            return port
        raise RuntimeError(f"no node serves {key}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
