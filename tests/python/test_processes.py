"""Two bot processes with the same bot name: crash failover, SIGTERM, SIGINT, a second
signal, signal opt-out, and a frozen (SIGSTOP) primary."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis

from processes import BotProcess, kill_all

LOCK_TTL = 1.0


@pytest.fixture
def bots(redis_url: str, bot_name: str) -> Iterator[list[BotProcess]]:
    started: list[BotProcess] = []
    yield started
    kill_all(started)


def start_pair(
    bots: list[BotProcess], url: str, bot_name: str, mode: str = "run"
) -> tuple[BotProcess, BotProcess]:
    """A primary, then a standby with the same bot name."""
    first = BotProcess(url, bot_name, LOCK_TTL, mode)
    bots.append(first)
    first.wait_for("PROMOTED", 15)
    second = BotProcess(url, bot_name, LOCK_TTL, "run")
    bots.append(second)
    ready = second.wait_for("READY", 15)
    assert ready.details[1] == "standby"
    return first, second


def lock_holder(r: redis.Redis, bot_name: str) -> str | None:
    return r.get(f"bot:{bot_name}:primary_lock")


def kill_primary_and_time(
    bots: list[BotProcess], url: str, bot_name: str, lock_ttl: float, mode: str
) -> float:
    """Seconds from kill -9 of a primary to its standby's promotion."""
    first = BotProcess(url, bot_name, lock_ttl, mode)
    bots.append(first)
    first.wait_for("PROMOTED", 15)
    second = BotProcess(url, bot_name, lock_ttl, mode)
    bots.append(second)
    assert second.wait_for("READY", 15).details[1] == "standby"
    time.sleep(0.3)
    killed_at = time.time()
    os.kill(first.pid, signal.SIGKILL)
    return second.wait_for("PROMOTED", 10).at - killed_at


def test_kill_9_at_the_default_ttl_is_seen_at_once(
    bots: list[BotProcess], redis_url: str, bot_name: str
):
    # Redis sees the killed process's connections close: no waiting for the 30 s lease.
    took = kill_primary_and_time(bots, redis_url, bot_name, 30.0, "run")
    assert took < 0.5, took


def test_without_fast_failover_a_kill_waits_for_the_lease(
    bots: list[BotProcess], redis_url: str, bot_name: str
):
    took = kill_primary_and_time(bots, redis_url, bot_name, 2.0, "no-fast")
    # The standby waits renew_deadline (+ 2 %) after the last renewal it saw, which came at
    # most lock_ttl / 3 before the kill.
    assert took >= 2.0 * 2 / 3 * 1.02 - 2.0 / 3 - 0.1, took


def test_kill_9_failover(bots: list[BotProcess], redis_url: str, bot_name: str, r: redis.Redis):
    first, second = start_pair(bots, redis_url, bot_name)
    old_epoch = int(first.wait_for("PROMOTED", 1).details[0])
    time.sleep(0.2)  # let it save state at least once
    killed_at = time.time()
    os.kill(first.pid, signal.SIGKILL)
    promoted = second.wait_for("PROMOTED", 10)
    took = promoted.at - killed_at
    # The lease expires at most lock_ttl after the last renewal; the standby polls.
    assert took <= LOCK_TTL + 0.5, took
    assert int(promoted.details[0]) > old_epoch
    holder = lock_holder(r, bot_name)
    assert holder is not None and holder.startswith(second.wait_for("READY", 1).details[0] + ":")
    assert not first.has("FINALLY")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_graceful_shutdown(
    bots: list[BotProcess], redis_url: str, bot_name: str, r: redis.Redis, signum: int
):
    first, second = start_pair(bots, redis_url, bot_name)
    first_id = first.wait_for("READY", 1).details[0]
    time.sleep(0.2)
    sent_at = time.time()
    os.kill(first.pid, signum)
    assert first.wait_exit(10) == 0
    first.wait_for("HANDLER_START", 1)
    first.wait_for("HANDLER_DONE", 1)
    first.wait_for("FINALLY", 1)  # SystemExit(0) unwound the main thread
    promoted = second.wait_for("PROMOTED", 5)
    assert promoted.at - sent_at <= 0.25, f"standby promoted {promoted.at - sent_at:.3f} s after"
    holder = lock_holder(r, bot_name)
    assert holder is None or not holder.startswith(first_id + ":")
    # The final state was saved with shutdown_time (before the standby's own saves, if any).
    # The standby's saves replace it, so look for it only when the standby has not saved yet.


def test_sigterm_saves_final_state(redis_url: str, bot_name: str, r: redis.Redis, bots):
    only = BotProcess(redis_url, bot_name, LOCK_TTL, "run")
    bots.append(only)
    only.wait_for("PROMOTED", 15)
    time.sleep(0.2)
    os.kill(only.pid, signal.SIGTERM)
    assert only.wait_exit(10) == 0
    import json

    state = json.loads(r.get(f"bot:{bot_name}:state") or "{}")
    assert state["owner"] == only.wait_for("READY", 1).details[0]
    assert "shutdown_time" in state and "last_update" in state
    assert r.get(f"bot:{bot_name}:primary_lock") is None


def test_sigterm_while_blocked_in_wait_until_primary(redis_url: str, bot_name: str, bots):
    first = BotProcess(redis_url, bot_name, LOCK_TTL, "run")
    bots.append(first)
    first.wait_for("PROMOTED", 15)
    waiting = BotProcess(redis_url, bot_name, LOCK_TTL, "wait")
    bots.append(waiting)
    waiting.wait_for("WAITING", 15)
    time.sleep(0.2)
    sent = time.monotonic()
    os.kill(waiting.pid, signal.SIGTERM)
    assert waiting.wait_exit(10) == 0
    assert time.monotonic() - sent < 1.0  # the wait noticed the signal promptly
    waiting.wait_for("HANDLER_DONE", 1)
    waiting.wait_for("FINALLY", 1)
    assert not waiting.has("WAITED")  # SystemExit ended the wait, not a promotion
    assert first.process.poll() is None


def test_second_signal_exits_at_once(redis_url: str, bot_name: str, bots):
    bot = BotProcess(redis_url, bot_name, LOCK_TTL, "slow-handler")
    bots.append(bot)
    bot.wait_for("PROMOTED", 15)
    bot.wait_for("READY", 15)  # reported after the shutdown handler is registered
    os.kill(bot.pid, signal.SIGTERM)
    bot.wait_for("HANDLER_START", 5)
    second_at = time.monotonic()
    os.kill(bot.pid, signal.SIGTERM)
    code = bot.wait_exit(5)
    assert time.monotonic() - second_at < 2
    assert code != 0
    assert not bot.has("HANDLER_DONE")


def test_no_signal_handlers_leaves_the_host_handler(redis_url: str, bot_name: str, bots):
    bot = BotProcess(redis_url, bot_name, LOCK_TTL, "no-signals")
    bots.append(bot)
    bot.wait_for("READY", 15)
    os.kill(bot.pid, signal.SIGTERM)
    bot.wait_for("HOST_HANDLER", 5)
    time.sleep(0.3)
    assert bot.process.poll() is None  # the host's handler does not exit
    assert not bot.has("HANDLER_START")


def test_frozen_primary_wakes_up_as_standby(
    bots: list[BotProcess], redis_url: str, bot_name: str, r: redis.Redis
):
    first = BotProcess(redis_url, bot_name, LOCK_TTL, "freeze")
    bots.append(first)
    first.wait_for("PROMOTED", 15)
    second = BotProcess(redis_url, bot_name, LOCK_TTL, "run")
    bots.append(second)
    second.wait_for("READY", 15)
    os.kill(first.pid, signal.SIGSTOP)
    second.wait_for("PROMOTED", 10)
    # Stopped longer than LOCK_TTL in all, so the bot reports its first look after the gap.
    time.sleep(LOCK_TTL + 0.3)
    os.kill(first.pid, signal.SIGCONT)
    look = first.wait_for("FIRST_LOOK_AFTER_GAP", 10)
    assert look.details[0] == "standby", look
    write = first.wait_for("WRITE_AFTER_GAP", 10)
    assert write.details[:2] == ["refused", "NotPrimaryError"], write
    import json

    state = json.loads(r.get(f"bot:{bot_name}:state") or "{}")
    assert "after_freeze" not in state
    assert state.get("owner") == second.wait_for("READY", 1).details[0]


EXIT_WITHOUT_CLOSE = """
import sys, threading
from quantshift_core import StateManager
m = StateManager(sys.argv[1], sys.argv[2], lock_ttl=1.0)
assert m.is_primary()
m.on_promoted(lambda: m.load_state())
m.on_demoted(lambda: m.load_state())
m.register_shutdown_handler(lambda: print("handler ran", flush=True))
m.save_state({"left": "without close"})
threading.Thread(target=m.wait_until_primary, daemon=True).start()
"""


def test_interpreter_exit_closes_the_manager(redis_url: str, bot_name: str, r: redis.Redis):
    import subprocess
    import sys

    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", EXIT_WITHOUT_CLOSE, bot_name, redis_url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 10
    assert "handler ran" in done.stdout
    assert r.get(f"bot:{bot_name}:primary_lock") is None
    import json

    state = json.loads(r.get(f"bot:{bot_name}:state") or "{}")
    assert state["left"] == "without close" and "shutdown_time" in state


def test_garbage_collected_manager_releases_the_lease(redis_url: str, bot_name: str, r):
    import gc
    import weakref

    from quantshift_core import StateManager

    manager = StateManager(bot_name, redis_url, lock_ttl=1.0, install_signal_handlers=False)
    assert manager.is_primary()
    ref = weakref.ref(manager)
    del manager
    gc.collect()
    assert ref() is None
    assert r.get(f"bot:{bot_name}:primary_lock") is None


FORK_CHILD = """
import json, os, sys
from quantshift_core import NotPrimaryError, StateManager
m = StateManager(sys.argv[1], sys.argv[2], lock_ttl=1.0)
assert m.is_primary()
m.save_state({"by": "parent"})
pid = os.fork()
if pid == 0:
    seen = {"primary": m.is_primary(), "epoch": m.epoch}
    for name, call in [("save", lambda: m.save_state({"by": "child"})),
                       ("load", m.load_state), ("fill", lambda: m.apply_fill("X", 1, 1.0))]:
        try:
            call()
            seen[name] = "allowed"
        except NotPrimaryError:
            seen[name] = "refused"
    m.close()
    print(json.dumps(seen), flush=True)
    sys.exit(0)  # atexit runs in the child too
_, status = os.waitpid(pid, 0)
after = {"child_status": status, "primary": m.is_primary()}
m.save_state({"by": "parent after fork"})
print(json.dumps(after), flush=True)
m.close()
"""


def test_forked_child_cannot_use_the_parents_manager(redis_url: str, bot_name: str, r):
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", FORK_CHILD, bot_name, redis_url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    child, parent = (json.loads(line) for line in done.stdout.splitlines())
    assert child == {
        "primary": False,
        "epoch": None,
        "save": "refused",
        "load": "refused",
        "fill": "refused",
    }
    # The child's close() and exit released nothing: the parent stayed primary throughout.
    assert parent == {"child_status": 0, "primary": True}
    state = json.loads(r.get(f"bot:{bot_name}:state"))
    assert state["by"] == "parent after fork"


MANY_MANAGERS = """
import resource, sys
from quantshift_core import StateManager
managers = [
    StateManager(f"{sys.argv[1]}-{i}", sys.argv[2], install_signal_handlers=False)
    for i in range(int(sys.argv[3]))
]
assert all(m.is_primary() for m in managers)
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], flush=True)
for m in managers:
    m.close()
"""


def test_a_process_hosting_many_bots_is_not_held_to_a_low_open_files_limit(
    redis_url: str, bot_name: str
):
    import resource
    import subprocess
    import sys

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 128
    if hard != resource.RLIM_INFINITY and hard < 4 * low:
        pytest.skip(f"the hard open-files limit ({hard}) leaves no room to raise")
    count = 40  # four connections each: 160 sockets, over the low limit

    def lower_the_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    run = subprocess.run(
        [sys.executable, "-c", MANY_MANAGERS, bot_name, redis_url, str(count)],
        preexec_fn=lower_the_limit,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert int(run.stdout.split()[-1]) > 4 * count, run.stdout
