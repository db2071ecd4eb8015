"""Throwaway redis-server processes on free 127.0.0.1 ports (never 6379), for tests and demos."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

import redis

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
