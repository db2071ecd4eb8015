"""An asyncio bot: the Usage block of STATE_MANAGEMENT.md rewritten with ``await``, then a
trading loop that works only while primary. SIGTERM / Ctrl-C end it gracefully (exit 0).

It connects to QUANTSHIFT_REDIS_URL, else REDIS_URL, else redis://127.0.0.1:6379/0:

    QUANTSHIFT_REDIS_URL=redis://127.0.0.1:6390/0 .venv/bin/python examples/async_bot.py 3

The optional argument is how many seconds the loop runs (default: until a signal). Start a
second copy with the same URL: it waits as the standby and takes over when the first ends.
"""

from __future__ import annotations

import asyncio
import sys

from quantshift_core.aio import AsyncStateManager


async def main(run_seconds: float | None) -> None:
    # Connects on the manager's own threads: the loop keeps running meanwhile.
    state = await AsyncStateManager.create(bot_name="equity-bot")

    async def close_positions() -> None:
        # Your cleanup code (runs on the loop during shutdown, SIGTERM included)
        print("shutdown handler ran", flush=True)

    state.register_shutdown_handler(close_positions)
    state.on_promoted(lambda: print(f"promoted, epoch {state.epoch}", flush=True))
    state.on_demoted(lambda: print("demoted", flush=True))

    async with state:
        if not state.is_primary():
            print("This instance is standby: waiting for the lease", flush=True)
            await state.wait_until_primary()

        await state.save_state(
            {"strategy": "moving_average", "last_trade": "2025-12-24T22:00:00", "daily_pnl": 150.50}
        )
        previous_state = await state.load_state()
        if previous_state:
            print(f"Recovered state from: {previous_state['last_update']}")

        await state.save_position(
            "AAPL",
            {"quantity": 10, "entry_price": 150.00, "stop_loss": 145.00, "take_profit": 160.00},
        )
        for symbol, data in (await state.load_positions()).items():
            print(f"{symbol}: {data['quantity']} shares @ ${data['entry_price']}")

        await state.heartbeat()
        print("This instance is primary" if state.is_primary() else "This instance is standby")

        loop = asyncio.get_running_loop()
        stop_at = None if run_seconds is None else loop.time() + run_seconds
        ticks = 0
        while stop_at is None or loop.time() < stop_at:
            if state.is_primary():
                ticks += 1
                await state.update_state({"ticks": ticks})
                if ticks % 30 == 0:
                    await state.heartbeat()
            await asyncio.sleep(1.0 if stop_at is None else 0.1)
        print(f"done after {ticks} ticks", flush=True)


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else None))
