"""Fixtures: real redis-server processes on free loopback ports, unique bot names, and
managers that are closed after each test. Short lock_ttl keeps failover tests fast."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import pytest
import redis

import quantshift_core

from redis_server import RedisServer

LOCK_TTL = 1.5


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def r(redis_server: RedisServer) -> redis.Redis:
    """A redis-py client on the test server, to look at what the library stored."""
    return redis_server.client()


@pytest.fixture
def bot_name() -> str:
    return f"test-bot-{uuid.uuid4().hex[:10]}"


ManagerFactory = Callable[..., quantshift_core.StateManager]


@pytest.fixture
def make_manager(redis_url: str, bot_name: str) -> Iterator[ManagerFactory]:
    made: list[quantshift_core.StateManager] = []

    def make(name: str = bot_name, **kwargs: Any) -> quantshift_core.StateManager:
        kwargs.setdefault("lock_ttl", LOCK_TTL)
        kwargs.setdefault("install_signal_handlers", False)
        manager = quantshift_core.StateManager(name, kwargs.pop("redis_url", redis_url), **kwargs)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.close()


@pytest.fixture
def primary(make_manager: ManagerFactory) -> quantshift_core.StateManager:
    manager = make_manager()
    assert manager.wait_until_primary(5)
    return manager


# Figures a test measured, printed in the terminal summary (also without -s).
def require_tool(name: str, package: str) -> str:
    """The path of a program a test needs. Without it the test is skipped, saying why; under
    the test command (QS_REQUIRE_ALL=1, set by scripts/test.sh) it fails instead, so no part
    the suite is meant to run is skipped for want of a program."""
    path = shutil.which(name)
    if path is None:
        why = f"{name} is not installed (Debian package {package}: bash scripts/setup.sh)"
        if os.environ.get("QS_REQUIRE_ALL") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return path


MEASURED: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in MEASURED:
        terminalreporter.write_line(line)
