"""Signal handling inside the test process: installation and restoration of handlers, no
spurious errors from interrupted round trips, and an interruptible wait."""

from __future__ import annotations

import logging
import signal
import threading
import time

import pytest

import quantshift_core

from conftest import ManagerFactory


def host_handler(signum, frame):  # pragma: no cover - never called
    pass


@pytest.fixture
def host_handlers():
    previous = {sig: signal.signal(sig, host_handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def test_handlers_installed_then_restored(make_manager: ManagerFactory, host_handlers):
    manager = make_manager(install_signal_handlers=True)
    assert signal.getsignal(signal.SIGTERM) is quantshift_core._on_signal
    assert signal.getsignal(signal.SIGINT) is quantshift_core._on_signal
    other = make_manager(install_signal_handlers=True)
    manager.close()
    assert signal.getsignal(signal.SIGTERM) is quantshift_core._on_signal  # `other` is open
    other.close()
    assert signal.getsignal(signal.SIGTERM) is host_handler
    assert signal.getsignal(signal.SIGINT) is host_handler


def test_opt_out_leaves_host_handlers(make_manager: ManagerFactory, host_handlers):
    manager = make_manager(install_signal_handlers=False)
    assert signal.getsignal(signal.SIGTERM) is host_handler
    manager.close()
    assert signal.getsignal(signal.SIGTERM) is host_handler


def test_off_the_main_thread_no_handlers(make_manager: ManagerFactory, host_handlers, caplog):
    caplog.set_level(logging.WARNING, logger="quantshift_core")
    made = []
    thread = threading.Thread(
        target=lambda: made.append(make_manager(install_signal_handlers=True))
    )
    thread.start()
    thread.join(10)
    assert made and signal.getsignal(signal.SIGTERM) is host_handler
    assert any("main thread" in rec.getMessage() for rec in caplog.records)


def test_signals_during_round_trips_are_not_errors(primary: quantshift_core.StateManager):
    # Python's handlers interrupt system calls (no SA_RESTART); a signal landing in a socket
    # read must not turn into RedisUnavailableError.
    received = [0]

    def on_alarm(signum, frame):
        received[0] += 1

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
    try:
        for n in range(400):
            primary.save_state({"n": n})
            primary.load_state()
            primary.apply_fill("AAPL", 1, 10.0, fill_id=f"f{n}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)
    assert received[0] > 50
    assert primary.load_positions()["AAPL"]["quantity"] == 400


class Interrupted(Exception):
    pass


def test_wait_until_primary_is_interruptible(make_manager: ManagerFactory):
    first = make_manager()
    second = make_manager()
    assert first.is_primary()

    def on_alarm(signum, frame):
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    started = time.monotonic()
    try:
        with pytest.raises(Interrupted):
            second.wait_until_primary()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < 1.0


def test_collected_manager_gives_the_signals_back(redis_url: str, bot_name: str, host_handlers):
    import gc

    manager = quantshift_core.StateManager(bot_name, redis_url, lock_ttl=1.5)
    assert signal.getsignal(signal.SIGTERM) is quantshift_core._on_signal
    del manager
    gc.collect()
    assert signal.getsignal(signal.SIGTERM) is host_handler
    assert signal.getsignal(signal.SIGINT) is host_handler
