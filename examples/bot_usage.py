"""The bot usage of STATE_MANAGEMENT.md (section Usage), unchanged, as a runnable script.

It connects to QUANTSHIFT_REDIS_URL, else REDIS_URL, else redis://127.0.0.1:6379/0:

    QUANTSHIFT_REDIS_URL=redis://127.0.0.1:6390/0 .venv/bin/python examples/bot_usage.py

At exit the manager closes: the shutdown handler runs, the state is saved again with
`shutdown_time`, and the primary lease is released for a standby to take over.
"""

# --- Usage block of STATE_MANAGEMENT.md, verbatim ---
# fmt: off
from quantshift_core import StateManager

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
# fmt: on
# --- end of the Usage block ---
