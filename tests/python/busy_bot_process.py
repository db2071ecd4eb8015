"""A bot on a busy host, for tests/python/test_liveness.py:
`python busy_bot_process.py URL BOT LOCK_TTL`.

What a real bot process can look like (issue 24): threads that hold the GIL for long stretches
and a logging handler that blocks. Here:
- `sys.setswitchinterval(QS_SWITCH_INTERVAL)` (default 1.0 s): a thread waiting for the GIL
  waits up to that long before the holder is asked to drop it;
- a thread running a pure-Python busy loop;
- a thread sorting a shuffled list of QS_SORT_SIZE ints (default 2,000,000) over and over:
  `sorted()` is C code that holds the GIL throughout (about a second here);
- the `quantshift_core` logger at INFO with a handler whose emit() sleeps QS_LOG_SLEEP seconds
  (default 1.0) per record, as a stalled syslog or HTTP handler would.

The manager runs at the default fast failover. Reports on stdout as bot_process.py does, one
line per event, `EVENT <time.time()> <details>`: READY <instance id> <role>, BUSY (the GIL
hogs run), PROMOTED <epoch>, DEMOTED, LOG <level> (each record the slow handler finished).
Saves state every 50 ms while primary, until killed; gives up after QS_MAX_RUN seconds
(default 120) so that a lost process cannot run forever.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import time

from quantshift_core import NotPrimaryError, StateManager


def report(event: str, *details: object) -> None:
    # One write per line: another thread cannot split it.
    line = " ".join([event, f"{time.time():.6f}", *map(str, details)]) + "\n"
    sys.stdout.write(line)
    sys.stdout.flush()


class SlowHandler(logging.Handler):
    """A handler that takes `pause` seconds per record."""

    def __init__(self, pause: float) -> None:
        super().__init__(logging.INFO)
        self.pause = pause

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(self.pause)
        report("LOG", record.levelname, record.name)
        sys.stderr.write(f"{record.levelname} {record.name}: {record.getMessage()}\n")


def busy_loop() -> None:
    """Pure Python: holds the GIL until the switch interval makes it drop it."""
    n = 0
    while True:
        n = (n + 1) % 1_000_003


def sort_forever(size: int) -> None:
    """C code holding the GIL for the whole of each sort (the eval loop never runs in it)."""
    numbers = list(range(size))
    random.Random(size).shuffle(numbers)
    while True:
        sorted(numbers)


def main() -> None:
    url, bot, lock_ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
    pause = float(os.environ.get("QS_LOG_SLEEP", "1.0"))
    switch = float(os.environ.get("QS_SWITCH_INTERVAL", "1.0"))
    size = int(os.environ.get("QS_SORT_SIZE", "2000000"))
    give_up = time.monotonic() + float(os.environ.get("QS_MAX_RUN", "120"))

    logging.getLogger().setLevel(logging.INFO)
    library = logging.getLogger("quantshift_core")
    library.setLevel(logging.INFO)
    library.addHandler(SlowHandler(pause))
    library.propagate = False

    state = StateManager(bot, url, lock_ttl=lock_ttl)
    state.on_promoted(lambda: report("PROMOTED", state.epoch))
    state.on_demoted(lambda *_: report("DEMOTED"))
    report("READY", state.instance_id, "primary" if state.is_primary() else "standby")

    sys.setswitchinterval(switch)
    threading.Thread(target=busy_loop, daemon=True).start()
    threading.Thread(target=sort_forever, args=(size,), daemon=True).start()
    report("BUSY", switch, size, pause)

    while time.monotonic() < give_up:
        if state.is_primary():
            try:
                state.save_state({"owner": state.instance_id, "epoch": state.epoch})
            except NotPrimaryError:
                pass  # demoted in between: the test counts takes in Redis, not here
        time.sleep(0.05)
    sys.exit(1)  # the test did not stop us


if __name__ == "__main__":
    main()
