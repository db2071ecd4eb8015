"""The asyncio face (quantshift_core.aio): the seed usage with await, every coroutine, callbacks
on the loop, bad input, a loop never blocked while Redis is frozen, and two bot processes
(crash failover, SIGTERM / SIGINT, a second signal)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from quantshift_core import (
    CorruptDataError,
    InvalidInputError,
    NotPrimaryError,
    RedisUnavailableError,
    StateManagerError,
)
from quantshift_core.aio import AsyncStateManager

from conftest import LOCK_TTL, MEASURED
from processes import BotProcess
from redis_server import RedisServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "async_bot.py")
OPTIONS: dict[str, Any] = {"lock_ttl": LOCK_TTL, "install_signal_handlers": False}


def test_seed_usage_with_await():
    """examples/async_bot.py: the Usage block of STATE_MANAGEMENT.md rewritten with await."""
    with RedisServer() as server:
        env = dict(os.environ, QUANTSHIFT_REDIS_URL=server.url)
        done = subprocess.run(
            [sys.executable, EXAMPLE, "0.5"], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        assert re.fullmatch(r"promoted, epoch \d{13,}", lines[0]), lines[0]
        assert lines[1].startswith("Recovered state from: 20")
        assert lines[2] == "AAPL: 10 shares @ $150.0"
        assert lines[3] == "This instance is primary"
        assert "shutdown handler ran" in lines and "Traceback" not in done.stderr
        r = server.client()
        state = json.loads(r.get("bot:equity-bot:state"))
        assert state["strategy"] == "moving_average" and state["ticks"] >= 1
        assert "shutdown_time" in state
        assert r.get("bot:equity-bot:primary_lock") is None
        assert json.loads(r.get("bot:equity-bot:position:AAPL"))["take_profit"] == 160.0


def test_every_coroutine(redis_url: str, bot_name: str, r: redis.Redis):
    async def main() -> None:
        async with AsyncStateManager(bot_name, redis_url, fast_failover=False, **OPTIONS) as sm:
            assert sm.is_primary() and sm.epoch is not None and sm.instance_id
            assert await sm.wait_until_primary(1)
            state = {"strategy": "ma"}
            await sm.save_state(state)
            assert "last_update" in state  # set on the dict passed, as the sync face does
            assert (await sm.update_state({"pnl": 1.5}))["pnl"] == 1.5
            loaded = await sm.load_state()
            assert loaded is not None and loaded["strategy"] == "ma" and loaded["pnl"] == 1.5
            await sm.save_position("AAPL", {"quantity": 10, "entry_price": 150.0})
            position = await sm.apply_fill("AAPL", 5, 160.0, fill_id="f1")
            assert position is not None and position["quantity"] == 15
            assert await sm.apply_fill("AAPL", 5, 160.0, fill_id="f1") is not None
            assert (await sm.load_positions())["AAPL"]["quantity"] == 15
            report = await sm.sync_positions({"MSFT": {"quantity": 1, "entry_price": 300.0}})
            assert report["inserted"] == 1 and report["deleted"] == 1
            assert await sm.clear_position("MSFT") is True
            assert await sm.load_positions() == {}
            await sm.heartbeat()
            await sm._ping()
            stalls = sm.lease_stalls()  # local: not a coroutine
            assert stalls.round_trip.count > 0 and stalls.tolerance_s > 0
            assert "AsyncStateManager" in repr(sm) and "primary" in repr(sm)
        assert sm.closed and not sm.is_primary() and sm.epoch is None
        await sm.close()  # a second close does nothing

    asyncio.run(main())
    assert "shutdown_time" in json.loads(r.get(f"bot:{bot_name}:state"))
    assert r.get(f"bot:{bot_name}:primary_lock") is None


def test_callbacks_run_on_the_loop_and_failover(redis_url: str, bot_name: str):
    async def main() -> None:
        loop_thread = threading.get_ident()
        seen: list[tuple[str, bool]] = []
        first = await AsyncStateManager.create(bot_name, redis_url, **OPTIONS)
        second = await AsyncStateManager.create(bot_name, redis_url, **OPTIONS)
        try:
            assert first.is_primary() and not second.is_primary()
            assert await second.wait_until_primary(0.2) is False
            promoted = asyncio.Event()

            async def on_promoted() -> None:  # a coroutine function
                seen.append(("promoted", threading.get_ident() == loop_thread))
                promoted.set()

            second.on_promoted(on_promoted)
            first.on_demoted(lambda: seen.append(("demoted", threading.get_ident() == loop_thread)))
            handler_ran = asyncio.Event()

            async def handler() -> None:
                await asyncio.sleep(0.01)  # awaits on the loop while shutdown() waits for it
                handler_ran.set()

            first.register_shutdown_handler(handler)
            old_epoch = first.epoch
            await first.close()
            assert handler_ran.is_set()
            await asyncio.wait_for(promoted.wait(), 5)
            assert await second.wait_until_primary(1)
            assert second.epoch is not None and old_epoch is not None and second.epoch > old_epoch
            with pytest.raises(NotPrimaryError):
                await first.save_state({"late": True})
            await asyncio.sleep(0.05)
            assert ("promoted", True) in seen and ("demoted", True) in seen
        finally:
            await first.close()
            await second.close()

    asyncio.run(main())


def test_bad_input(redis_url: str, bot_name: str, r: redis.Redis):
    async def main() -> None:
        idle = AsyncStateManager(bot_name, redis_url, **OPTIONS)
        assert not idle.is_primary() and idle.epoch is None and not idle.closed
        with pytest.raises(StateManagerError, match="not started"):
            await idle.save_state({"a": 1})
        refused = AsyncStateManager(bot_name, redis_url, lock_ttl=-1)
        for _ in range(2):  # a failed start may be tried again (and fails the same way)
            with pytest.raises(InvalidInputError, match="lock_ttl"):
                await refused.start()
        with pytest.raises(InvalidInputError):
            await AsyncStateManager.create("a:b", redis_url, **OPTIONS)
        async with AsyncStateManager(bot_name, redis_url, **OPTIONS) as sm:
            with pytest.raises(StateManagerError, match="started already"):
                await sm.start()
            with pytest.raises(InvalidInputError):
                await sm.save_state({"nan": float("nan")})
            with pytest.raises(TypeError):
                await sm.save_state(["not", "a", "dict"])  # type: ignore[arg-type]
            with pytest.raises(InvalidInputError):
                await sm.save_position("", {"quantity": 1})
            with pytest.raises(ValueError):
                await sm.wait_until_primary(-1)
            r.set(f"bot:{bot_name}:state", "not json")
            with pytest.raises(CorruptDataError):
                await sm.load_state()
            r.delete(f"bot:{bot_name}:state")
            with pytest.raises(TypeError):
                sm.on_promoted(42)  # type: ignore[arg-type]

    asyncio.run(main())


def test_loop_never_blocked_while_redis_is_frozen(bot_name: str):
    """A 10 ms ticker measures the loop's lag while Redis is stopped (SIGSTOP) and awaited
    calls time out; the worst lag must stay under 5 ms.

    On a loaded machine the scheduler alone delays a waking thread by several ms, with or
    without this library, so the ticker first measures that noise with Redis running and no
    call in flight, and the limit is 5 ms above it. A call that blocked the loop would show
    up as a lag of at least command_timeout (300 ms). The loop thread asks for a higher
    priority first (allowed as root), which keeps the noise small."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -10)
    figures = []
    for _attempt in range(3):
        worst_ms, noise_ms, ticks = frozen_loop_lag(bot_name)
        figures.append(f"worst {worst_ms:.2f} ms over {ticks} ticks (noise {noise_ms:.2f} ms)")
        if worst_ms < 5.0 + noise_ms:
            break
    MEASURED.append(
        "aio loop lag while Redis frozen, 10 ms ticker, limit 5 ms above the scheduler noise "
        "measured with Redis running: " + "; ".join(figures)
    )
    print("\n" + MEASURED[-1])
    assert worst_ms < 5.0 + noise_ms, f"the event loop lagged {worst_ms:.2f} ms"


def frozen_loop_lag(bot_name: str) -> tuple[float, float, int]:
    """(worst lag while frozen, worst lag while idle, ticks while frozen), in ms."""
    server = RedisServer()
    pid = server.process.pid
    idle_lags: list[float] = []
    frozen_lags: list[float] = []
    outcomes: list[BaseException | object] = []

    async def ticker(lags: list[float], stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        expected = loop.time() + 0.01
        while not stop.is_set():
            await asyncio.sleep(max(0.0, expected - loop.time()))
            now = loop.time()
            lags.append(now - expected)
            sm.is_primary()  # local: must not block either
            _ = sm.epoch
            expected = now + 0.01

    async def main() -> None:
        nonlocal sm
        sm = await AsyncStateManager.create(
            bot_name,
            server.url,
            lock_ttl=10,
            command_timeout=0.3,
            connect_timeout=0.3,
            install_signal_handlers=False,
        )
        await sm.save_state({"before": True})
        stop = asyncio.Event()
        ticking = asyncio.create_task(ticker(idle_lags, stop))
        await asyncio.sleep(1.5)
        stop.set()
        await ticking
        stop = asyncio.Event()
        ticking = asyncio.create_task(ticker(frozen_lags, stop))
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            outcomes.extend(
                await asyncio.gather(
                    sm.save_state({"during": True}),
                    sm.load_state(),
                    sm.load_positions(),
                    sm.apply_fill("AAPL", 1, 10.0),
                    return_exceptions=True,
                )
            )
            frozen_for = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        stop.set()
        await ticking
        assert frozen_for >= 0.3
        await sm.close()

    sm: Any = None
    try:
        asyncio.run(main())
    finally:
        os.kill(pid, signal.SIGCONT)
        server.stop()
    assert isinstance(outcomes[0], RedisUnavailableError), outcomes
    assert all(isinstance(o, StateManagerError) for o in outcomes), outcomes
    assert len(frozen_lags) > 50
    return max(frozen_lags) * 1000, max(idle_lags) * 1000, len(frozen_lags)


# Two processes, as test_processes.py does for the blocking face.

PROCESS_LOCK_TTL = 1.0


@pytest.fixture
def bots() -> Iterator[list[BotProcess]]:
    started: list[BotProcess] = []
    yield started
    for bot in started:
        bot.kill()


def start_aio(bots: list[BotProcess], url: str, bot_name: str, mode: str = "run") -> BotProcess:
    bot = BotProcess(url, bot_name, PROCESS_LOCK_TTL, mode, script="aio_bot_process.py")
    bots.append(bot)
    return bot


def test_two_process_crash_failover(bots: list[BotProcess], redis_url: str, bot_name: str):
    first = start_aio(bots, redis_url, bot_name)
    old_epoch = int(first.wait_for("PROMOTED", 15).details[0])
    second = start_aio(bots, redis_url, bot_name)
    assert second.wait_for("READY", 15).details[1] == "standby"
    time.sleep(0.2)
    killed_at = time.time()
    os.kill(first.pid, signal.SIGKILL)
    promoted = second.wait_for("PROMOTED", 10)
    assert promoted.at - killed_at <= PROCESS_LOCK_TTL + 0.5
    assert int(promoted.details[0]) > old_epoch


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_graceful_shutdown(
    bots: list[BotProcess], redis_url: str, bot_name: str, r: redis.Redis, signum: int
):
    first = start_aio(bots, redis_url, bot_name)
    first.wait_for("PROMOTED", 15)
    first_id = first.wait_for("READY", 1).details[0]
    second = start_aio(bots, redis_url, bot_name)
    second.wait_for("READY", 15)
    time.sleep(0.2)
    sent_at = time.time()
    os.kill(first.pid, signum)
    assert first.wait_exit(10) == 0, first.stderr
    first.wait_for("HANDLER_START", 1)
    first.wait_for("HANDLER_DONE", 1)
    first.wait_for("FINALLY", 1)  # the main task was cancelled and unwound
    assert "Traceback" not in first.stderr, first.stderr
    promoted = second.wait_for("PROMOTED", 5)
    assert promoted.at - sent_at <= 0.5, f"standby promoted {promoted.at - sent_at:.3f} s after"
    holder = r.get(f"bot:{bot_name}:primary_lock")
    assert holder is None or not holder.startswith(first_id + ":")


def test_sigterm_saves_final_state(bots: list[BotProcess], redis_url: str, bot_name: str, r):
    only = start_aio(bots, redis_url, bot_name)
    only.wait_for("PROMOTED", 15)
    time.sleep(0.2)
    os.kill(only.pid, signal.SIGTERM)
    assert only.wait_exit(10) == 0, only.stderr
    state = json.loads(r.get(f"bot:{bot_name}:state") or "{}")
    assert state["owner"] == only.wait_for("READY", 1).details[0]
    assert "shutdown_time" in state
    assert r.get(f"bot:{bot_name}:primary_lock") is None


def test_second_signal_exits_at_once(bots: list[BotProcess], redis_url: str, bot_name: str):
    bot = start_aio(bots, redis_url, bot_name, "slow-handler")
    bot.wait_for("PROMOTED", 15)
    bot.wait_for("READY", 15)  # reported after the shutdown handler is registered
    os.kill(bot.pid, signal.SIGTERM)
    bot.wait_for("HANDLER_START", 5)
    second_at = time.monotonic()
    os.kill(bot.pid, signal.SIGTERM)
    code = bot.wait_exit(5)
    assert time.monotonic() - second_at < 2
    assert code == 128 + signal.SIGTERM
    assert not bot.has("HANDLER_DONE")
