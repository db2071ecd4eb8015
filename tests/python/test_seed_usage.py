"""The Usage block of STATE_MANAGEMENT.md runs unchanged (examples/bot_usage.py carries it
verbatim), against a fresh redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from redis_server import RedisServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "bot_usage.py")
SPEC = os.path.join(ROOT, "docs", "STATE_MANAGEMENT.md")

# The block as the seed document has it.
SEED_USAGE = """from quantshift_core import StateManager

# Initialize state manager
state = StateManager(bot_name="equity-bot")

# Register shutdown handler
def close_positions():
    # Your cleanup code
    pass

state.register_shutdown_handler(close_positions)

# Save bot state
state.save_state({
    "strategy": "moving_average",
    "last_trade": "2025-12-24T22:00:00",
    "daily_pnl": 150.50
})

# Load state on startup
previous_state = state.load_state()
if previous_state:
    print(f"Recovered state from: {previous_state['last_update']}")

# Save position
state.save_position("AAPL", {
    "quantity": 10,
    "entry_price": 150.00,
    "stop_loss": 145.00,
    "take_profit": 160.00
})

# Load all positions
positions = state.load_positions()
for symbol, data in positions.items():
    print(f"{symbol}: {data['quantity']} shares @ ${data['entry_price']}")

# Send heartbeat (call every 30 seconds)
state.heartbeat()

# Check if primary
if state.is_primary():
    print("This instance is primary")
else:
    print("This instance is standby")
"""


def test_example_carries_the_block_verbatim():
    with open(EXAMPLE, encoding="utf-8") as f:
        assert SEED_USAGE in f.read()


def test_block_matches_the_seed_document():
    with open(SPEC, encoding="utf-8") as f:
        assert "```python\n" + SEED_USAGE + "```" in f.read()


def run(url: str, code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, QUANTSHIFT_REDIS_URL=url)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def test_seed_usage_runs_unchanged():
    with RedisServer() as server:
        done = run(server.url, SEED_USAGE)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].startswith("Recovered state from: 20")
        assert lines[1] == "AAPL: 10 shares @ $150.0"
        assert lines[2] == "This instance is primary"
        r = server.client()
        state = json.loads(r.get("bot:equity-bot:state"))
        assert state["strategy"] == "moving_average" and state["daily_pnl"] == 150.5
        assert "shutdown_time" in state  # closed at interpreter exit
        assert r.get("bot:equity-bot:primary_lock") is None
        position = json.loads(r.get("bot:equity-bot:position:AAPL"))
        assert position["take_profit"] == 160.0 and position["quantity"] == 10
        assert r.get("bot:equity-bot:heartbeat") is not None

        # A restart recovers what the first run saved.
        again = run(server.url, SEED_USAGE)
        assert again.returncode == 0, again.stderr
        assert "This instance is primary" in again.stdout


def test_seed_usage_as_a_standby():
    with RedisServer() as server:
        r = server.client()
        r.set("bot:equity-bot:primary_lock", "other-host:1:0123", px=60_000)
        done = run(server.url, SEED_USAGE)
        # The predecessor wrote from any instance; a standby's write is now refused.
        assert done.returncode == 1
        assert "NotPrimaryError" in done.stderr
        assert r.get("bot:equity-bot:state") is None


def test_example_script_runs():
    with RedisServer() as server:
        env = dict(os.environ, QUANTSHIFT_REDIS_URL=server.url)
        done = subprocess.run(
            [sys.executable, EXAMPLE], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "This instance is primary" in done.stdout
