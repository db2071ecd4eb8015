"""Failover demo: two bot processes with the same bot name; the primary trades, is killed with
SIGKILL, and the standby takes over with the state and positions the primary left. Then the
other way round with a graceful stop (SIGTERM), where the lease is handed over at once.

    QUANTSHIFT_REDIS_URL=redis://127.0.0.1:6390/0 .venv/bin/python examples/failover_demo.py

(`bash scripts/demo.sh` starts a throwaway redis-server and runs this.) Prints a timeline.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid

LOCK_TTL = 2.0  # seconds; a crashed primary's lease expires at most this long after it died


def bot(url: str, name: str) -> None:
    """One bot process: reports events as JSON lines on stdout."""
    import logging

    from quantshift_core import StateManager

    def say(event: str, **fields: object) -> None:
        # One write per line: threads (callbacks, handlers) cannot split it.
        sys.stdout.write(json.dumps({"event": event, "at": time.time(), **fields}) + "\n")
        sys.stdout.flush()

    class ToTimeline(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            say(f"log {record.levelname}", message=record.getMessage())

    # The library's log records (logger quantshift_core) go into the timeline.
    logging.getLogger("quantshift_core").addHandler(ToTimeline(logging.INFO))
    logging.getLogger("quantshift_core").setLevel(logging.INFO)

    state = StateManager(name, url, lock_ttl=LOCK_TTL, shutdown_timeout=5)

    def promoted() -> None:
        say(
            "promoted",
            epoch=state.epoch,
            recovered_state=state.load_state(),
            positions={s: p["quantity"] for s, p in state.load_positions().items()},
        )

    state.register_shutdown_handler(lambda: say("shutdown handler ran"))
    say("started", instance=state.instance_id, primary=state.is_primary())
    state.on_promoted(promoted)
    fills = 0
    while True:
        if state.is_primary():
            fills += 1
            state.apply_fill("AAPL", 1, 150.0 + fills / 100, fill_id=f"{state.instance_id}-{fills}")
            state.save_state(
                {"strategy": "moving_average", "fills": fills, "by": state.instance_id}
            )
        time.sleep(0.1)


class Bot:
    def __init__(self, label: str, url: str, name: str, events: queue.Queue) -> None:
        self.label = label
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--bot", url, name],
            stdout=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, args=(events,), daemon=True).start()

    def _read(self, events: queue.Queue) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                events.put((self.label, json.loads(line)))
            except ValueError:
                pass

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def main() -> int:
    url = os.environ.get("QUANTSHIFT_REDIS_URL") or os.environ.get("REDIS_URL")
    if not url:
        print("set QUANTSHIFT_REDIS_URL (scripts/demo.sh starts a throwaway server)")
        return 2
    name = f"demo-bot-{uuid.uuid4().hex[:6]}"
    events: queue.Queue = queue.Queue()
    t0 = time.time()

    def line(text: str, at: float | None = None) -> None:
        print(f"  t+{(at if at is not None else time.time()) - t0:7.3f}s  {text}", flush=True)

    def wait_for(label: str, event: str, timeout: float = 15) -> dict:
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            try:
                who, what = events.get(timeout=max(0.0, give_up - time.monotonic()))
            except queue.Empty:
                break
            describe(who, what)
            if who == label and what["event"] == event:
                return what
        raise SystemExit(f"demo: no '{event}' from bot {label} within {timeout} s")

    def describe(who: str, what: dict) -> None:
        extra = {k: v for k, v in what.items() if k not in ("event", "at")}
        if what["event"].startswith("log "):
            line(f"bot {who}: {what['event']}: {extra['message']}", what["at"])
        else:
            line(f"bot {who}: {what['event']} {json.dumps(extra)}", what["at"])

    print(f"failover demo: bot name {name!r}, lock_ttl {LOCK_TTL} s, Redis {redact(url)}")
    a = Bot("A", url, name, events)
    b: Bot | None = None
    c: Bot | None = None
    try:
        wait_for("A", "promoted")
        b = Bot("B", url, name, events)
        wait_for("B", "started")
        time.sleep(1.0)  # A trades: fills and state saves
        killed = time.time()
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(10)
        line(f"kill -9 bot A (pid {a.process.pid})", killed)
        took_over = wait_for("B", "promoted")
        crash_gap = took_over["at"] - killed
        line(f"bot B took over {crash_gap * 1000:.0f} ms after the crash (bound: lock_ttl)")

        c = Bot("C", url, name, events)
        wait_for("C", "started")
        time.sleep(0.5)
        stopped = time.time()
        b.process.send_signal(signal.SIGTERM)
        line(f"SIGTERM to bot B (pid {b.process.pid})", stopped)
        handed = wait_for("C", "promoted")
        code = b.process.wait(10)
        graceful_gap = handed["at"] - stopped
        line(f"bot B exited with status {code}")
        line(f"bot C took over {graceful_gap * 1000:.0f} ms after SIGTERM (lease released)")
        print(
            f"summary: crash takeover {crash_gap * 1000:.0f} ms, "
            f"graceful takeover {graceful_gap * 1000:.0f} ms, bot B exit status {code}"
        )
        return 0 if code == 0 else 1
    finally:
        for bot_ in (a, b, c):
            if bot_ is not None:
                bot_.stop()


def redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest.split("/", 1)[0]:
        return f"{scheme}{sep}***@{rest.split('@', 1)[1]}"
    return url


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--bot":
        bot(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
