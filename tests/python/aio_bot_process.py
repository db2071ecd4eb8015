"""bot_process.py for the asyncio face: `python aio_bot_process.py URL BOT LOCK_TTL MODE`,
reporting the same events (READY, PROMOTED, HANDLER_START / HANDLER_DONE, FINALLY, and
DEMOTED). Modes: `run` (saves state while primary until a signal ends it) and
`slow-handler` (its coroutine shutdown handler sleeps 30 s: second-signal test)."""

from __future__ import annotations

import asyncio
import sys

from bot_process import report

from quantshift_core.aio import AsyncStateManager


async def main() -> None:
    url, bot, lock_ttl, mode = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    state = await AsyncStateManager.create(
        bot, url, lock_ttl=lock_ttl, shutdown_timeout=60 if mode == "slow-handler" else 5
    )
    loop = asyncio.get_running_loop()

    async def promoted() -> None:
        # A coroutine callback, run on the loop.
        assert asyncio.get_running_loop() is loop
        report("PROMOTED", state.epoch)

    state.on_promoted(promoted)
    state.on_demoted(lambda: report("DEMOTED"))

    async def handler() -> None:
        report("HANDLER_START")
        if mode == "slow-handler":
            await asyncio.sleep(30)
        report("HANDLER_DONE")

    state.register_shutdown_handler(handler)
    report("READY", state.instance_id, "primary" if state.is_primary() else "standby")
    try:
        while True:
            if state.is_primary():
                await state.save_state({"owner": state.instance_id, "epoch": state.epoch})
            await asyncio.sleep(0.05)
    finally:
        report("FINALLY")


if __name__ == "__main__":
    asyncio.run(main())
