"""A bot process for the multi-process tests: `python bot_process.py URL BOT LOCK_TTL MODE`.

It reports on stdout, one line per event, `EVENT <time.time()> <details>`, flushed at once:
READY, PROMOTED, HANDLER_START / HANDLER_DONE (its shutdown handler), FINALLY (its `finally`
block ran), and in mode `freeze` FIRST_LOOK_AFTER_GAP and WRITE_AFTER_GAP. Modes:
- `run`: saves state when primary, then idles until a signal ends it.
- `no-fast`: like run, with fast_failover=False (failover waits for the lease to expire).
- `slow-handler`: like run, but its shutdown handler sleeps 30 s (second-signal test).
- `no-signals`: install_signal_handlers=False; the host's SIGTERM handler prints HOST_HANDLER.
- `wait`: blocks in wait_until_primary() (no timeout) and reports WAITED when it returns.
- `freeze`: samples is_primary() every millisecond; after a gap longer than LOCK_TTL (the
  process was stopped) reports the first sample and then tries a write.
"""

from __future__ import annotations

import signal
import sys
import time

from quantshift_core import NotPrimaryError, StateManager


def report(event: str, *details: object) -> None:
    # One write per line: a signal handler or another thread cannot split it.
    line = " ".join([event, f"{time.time():.6f}", *map(str, details)]) + "\n"
    sys.stdout.write(line)
    sys.stdout.flush()


def main() -> None:
    url, bot, lock_ttl, mode = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    if mode == "no-signals":
        signal.signal(signal.SIGTERM, lambda *_: report("HOST_HANDLER"))
    state = StateManager(
        bot,
        url,
        lock_ttl=lock_ttl,
        install_signal_handlers=mode != "no-signals",
        shutdown_timeout=60 if mode == "slow-handler" else 5,
        fast_failover=mode != "no-fast",
    )
    state.on_promoted(lambda: report("PROMOTED", state.epoch))

    def handler() -> None:
        report("HANDLER_START")
        if mode == "slow-handler":
            time.sleep(30)
        report("HANDLER_DONE")

    state.register_shutdown_handler(handler)
    report("READY", state.instance_id, "primary" if state.is_primary() else "standby")
    try:
        if mode == "freeze":
            freeze_loop(state, lock_ttl)
        elif mode == "wait":
            report("WAITING")
            report("WAITED", state.wait_until_primary())
        else:
            while True:
                if state.is_primary():
                    state.save_state({"owner": state.instance_id, "epoch": state.epoch})
                time.sleep(0.05)
    finally:
        report("FINALLY")


def freeze_loop(state: StateManager, lock_ttl: float) -> None:
    last = time.monotonic()
    while True:
        now = time.monotonic()
        primary = state.is_primary()
        if now - last > lock_ttl:
            report("FIRST_LOOK_AFTER_GAP", "primary" if primary else "standby", f"{now - last:.3f}")
            try:
                state.save_state({"owner": state.instance_id, "after_freeze": True})
                report("WRITE_AFTER_GAP", "accepted")
            except NotPrimaryError as err:
                report("WRITE_AFTER_GAP", "refused", type(err).__name__)
            return
        last = now
        time.sleep(0.001)


if __name__ == "__main__":
    main()
