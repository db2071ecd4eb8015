"""Bot processes (tests/python/bot_process.py) driven by the tests, with bounded waits."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Event:
    name: str
    at: float
    details: list[str]


class BotProcess:
    def __init__(
        self, url: str, bot: str, lock_ttl: float, mode: str = "run", script: str = "bot_process.py"
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(HERE, script), url, bot, str(lock_ttl), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[Event] = []
        self._queue: queue.Queue[Event | None] = queue.Queue()
        self.stderr = ""
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            parts = line.split()
            try:
                self._queue.put(Event(parts[0], float(parts[1]), parts[2:]))
            except (IndexError, ValueError):
                self.stderr += f"[unparsed stdout line] {line}"
        self._queue.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr += line

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_for(self, name: str, timeout: float) -> Event:
        """The first event called `name` (seen now or within `timeout` seconds)."""
        for event in self.events:
            if event.name == name:
                return event
        give_up = time.monotonic() + timeout
        while True:
            left = give_up - time.monotonic()
            if left <= 0:
                break
            try:
                event = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if event is None:
                self._queue.put(None)
                break
            self.events.append(event)
            if event.name == name:
                return event
        raise AssertionError(
            f"no {name} from bot process {self.pid} within {timeout} s; events "
            f"{[e.name for e in self.events]}; exit {self.process.poll()}; stderr:\n{self.stderr}"
        )

    def has(self, name: str) -> bool:
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            if event is None:
                self._queue.put(None)
                break
            self.events.append(event)
        return any(e.name == name for e in self.events)

    def wait_exit(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def kill_all(bots: list[BotProcess]) -> None:
    """SIGKILL for each bot process still running, stopped (SIGSTOP) ones included."""
    for bot in bots:
        try:
            os.kill(bot.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        bot.kill()
