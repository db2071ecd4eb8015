"""The failover demo (the README's first command runs it) works and reports a takeover."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from redis_server import RedisServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_failover_demo():
    with RedisServer() as server:
        env = dict(os.environ, QUANTSHIFT_REDIS_URL=server.url)
        done = subprocess.run(
            [sys.executable, os.path.join(ROOT, "examples", "failover_demo.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = re.search(
        r"crash takeover (\d+) ms, graceful takeover (\d+) ms, bot B exit status 0", done.stdout
    )
    assert summary, done.stdout
    crash_ms, graceful_ms = int(summary.group(1)), int(summary.group(2))
    assert crash_ms <= 2000 + 1000  # lock_ttl 2 s, plus polling
    assert graceful_ms <= 250
    assert "bot B: shutdown handler ran" in done.stdout
    assert '"fills"' in done.stdout  # the standby recovered the primary's state
