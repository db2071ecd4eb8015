"""Threads sharing one manager, callbacks that call back into it, and the GIL released
during round trips."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import redis

from quantshift_core import NotPrimaryError, StateManager

from conftest import ManagerFactory

THREADS = 8
FILLS_PER_THREAD = 25


def test_eight_threads_share_one_manager(primary: StateManager):
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(index: int) -> None:
        try:
            start.wait(5)
            for n in range(FILLS_PER_THREAD):
                primary.apply_fill("SHARED", 1, 100.0 + index, fill_id=f"t{index}-{n}")
                # A fill delivered twice is applied once.
                primary.apply_fill("SHARED", 1, 100.0 + index, fill_id=f"t{index}-{n}")
                primary.save_position(f"OWN{index}", {"quantity": n, "thread": index})
                primary.update_state({f"t{index}": n})
                assert primary.is_primary()
                assert primary.load_state() is not None
                assert "SHARED" in primary.load_positions()
        except BaseException as err:  # noqa: B902 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    positions = primary.load_positions()
    assert positions["SHARED"]["quantity"] == THREADS * FILLS_PER_THREAD
    for i in range(THREADS):
        assert positions[f"OWN{i}"] == {
            "quantity": FILLS_PER_THREAD - 1,
            "thread": i,
            "last_update": positions[f"OWN{i}"]["last_update"],
        }
    state = primary.load_state()
    assert state is not None
    assert all(state[f"t{i}"] == FILLS_PER_THREAD - 1 for i in range(THREADS))


def test_round_trips_release_the_gil(primary: StateManager, r: redis.Redis):
    # Redis answers nobody for 400 ms; a load_state in another thread waits for it.
    r.execute_command("CLIENT", "PAUSE", 400)
    waited: list[float] = []

    def load() -> None:
        started = time.monotonic()
        primary.load_state()
        waited.append(time.monotonic() - started)

    thread = threading.Thread(target=load)
    thread.start()
    ticks = 0
    while thread.is_alive():
        ticks += 1
        time.sleep(0.005)
    thread.join()
    assert waited and waited[0] > 0.3
    assert ticks > 30  # this thread ran Python while the other one waited on Redis


def test_on_promoted_calls_back_into_the_manager(make_manager: ManagerFactory, r, bot_name):
    first = make_manager()
    second = make_manager()
    seen: dict[str, object] = {}
    done = threading.Event()

    def promoted() -> None:
        seen["primary"] = second.is_primary()
        seen["epoch"] = second.epoch
        second.save_state({"resumed_by": second.instance_id})
        seen["positions"] = second.load_positions()
        second.heartbeat()
        seen["thread"] = threading.current_thread() is threading.main_thread()
        done.set()

    second.on_promoted(promoted)
    assert not done.is_set()  # not primary yet: not called
    first.close()
    assert done.wait(5)
    assert seen["primary"] is True and isinstance(seen["epoch"], int)
    assert seen["thread"] is False
    loaded = second.load_state()
    assert loaded is not None and loaded["resumed_by"] == second.instance_id


def test_on_promoted_when_primary_already_runs_once(primary: StateManager):
    calls: list[int | None] = []
    primary.on_promoted(lambda: calls.append(primary.epoch))
    assert calls == [primary.epoch]
    time.sleep(0.3)
    assert len(calls) == 1


def test_on_demoted_calls_back_into_the_manager(primary: StateManager, r, bot_name: str):
    seen: dict[str, object] = {}
    done = threading.Event()

    def demoted() -> None:
        seen["primary"] = primary.is_primary()
        seen["state"] = primary.load_state()
        try:
            primary.save_state({"v": "after demotion"})
        except NotPrimaryError:
            seen["refused"] = True
        primary.close()  # closing from the callback's own thread does not deadlock
        done.set()

    primary.on_demoted(demoted)
    primary.save_state({"v": 1})
    # Someone else holds the lease now: the next renewal fails and the instance demotes.
    r.set(f"bot:{bot_name}:primary_lock", "other-host:1:feedface", px=60_000)
    assert done.wait(5)
    assert seen["primary"] is False and seen["refused"] is True
    assert isinstance(seen["state"], dict) and seen["state"]["v"] == 1
    assert primary.closed


def test_a_raising_callback_is_logged_and_the_next_runs(
    make_manager: ManagerFactory, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.ERROR, logger="quantshift_core")
    first = make_manager()
    second = make_manager()
    done = threading.Event()

    def boom() -> None:
        raise KeyError("boom-in-callback")

    second.on_promoted(boom)
    second.on_promoted(done.set)
    first.close()
    assert done.wait(5)
    assert any("boom-in-callback" in rec.getMessage() for rec in caplog.records)


def test_callbacks_while_the_main_thread_is_busy(make_manager: ManagerFactory):
    # Callbacks need the GIL on the event thread while this thread keeps calling in.
    first = make_manager()
    second = make_manager()
    count = [0]
    done = threading.Event()

    def promoted() -> None:
        for _ in range(20):
            second.save_state({"n": count[0]})
            count[0] += 1
        done.set()

    second.on_promoted(promoted)
    first.close()
    give_up = time.monotonic() + 10
    while not done.is_set() and time.monotonic() < give_up:
        second.load_positions()
        second.is_primary()
        _ = second.epoch
    assert done.is_set() and count[0] == 20


def blocked_signals_of_a_child() -> str:
    """The SigBlk mask of a process started from the calling thread."""
    import subprocess

    out = subprocess.run(
        ["grep", "SigBlk", "/proc/self/status"], capture_output=True, text=True, timeout=10
    ).stdout
    return out.split()[1]


def test_processes_started_from_callbacks_get_signals(make_manager: ManagerFactory):
    # The core's threads block signals; Python code they run must not pass that on.
    first = make_manager()
    second = make_manager()
    masks: dict[str, str] = {}
    done = threading.Event()

    def promoted() -> None:
        masks["on_promoted"] = blocked_signals_of_a_child()
        done.set()

    second.on_promoted(promoted)
    first.register_shutdown_handler(lambda: masks.update(handler=blocked_signals_of_a_child()))
    first.close()
    assert done.wait(5)
    assert masks == {"on_promoted": "0" * 16, "handler": "0" * 16}


def test_callbacks_referring_to_their_manager_do_not_leak_it(redis_url: str, bot_name: str, r):
    import gc
    import weakref

    from quantshift_core import StateManager

    def make() -> weakref.ReferenceType[StateManager]:
        manager = StateManager(bot_name, redis_url, lock_ttl=1.5, install_signal_handlers=False)
        manager.on_promoted(lambda: manager.load_state())
        manager.on_demoted(lambda: manager.is_primary())
        manager.register_shutdown_handler(lambda: manager.save_state({"closing": True}))
        assert manager.is_primary()
        return weakref.ref(manager)

    # Closed, then dropped: the callables were let go at close().
    closed = make()
    manager = closed()
    assert manager is not None
    manager.close()
    del manager
    gc.collect()
    assert closed() is None

    # Never closed: the garbage collector finds the cycle through the callbacks, and the
    # manager closes as it goes (its lease is released, not left to expire). The collection
    # may run on another thread (an automatic one on the manager's event thread, while
    # gc.collect() here then does nothing), so the close may still be under way.
    dropped = make()
    gc.collect()
    assert dropped() is None
    give_up = time.monotonic() + 5
    record: dict = {}
    while time.monotonic() < give_up:
        record = r.hgetall(f"bot:{bot_name}:lease_record")
        if record.get("token") == "":
            break
        time.sleep(0.01)
    assert record.get("token") == "", record  # released
    assert r.get(f"bot:{bot_name}:primary_lock") is None
