"""quantshift_core for asyncio programs: ``AsyncStateManager``.

The same manager as ``quantshift_core.StateManager`` (same options, same keys, same lease),
with every method that talks to Redis a coroutine, so the event loop is never blocked:

- **Executor.** Each call that may touch Redis or wait for the core runs on a small thread
  pool owned by the manager (``_WORKERS`` threads; the compiled methods release the GIL for
  the whole round trip). Calls beyond that queue in the pool, not on the loop. A call
  outlives a cancelled ``await`` (a Redis write cannot be taken back half-way); its outcome
  is then dropped. ``shutdown()`` lets the calls already sent finish and holds new ones until
  it is done, so its final state save is the last write.
- **Construction.** Connecting and taking a free lease is network I/O, so the constructor
  only checks and keeps the options; ``await AsyncStateManager.create(bot, url, **options)``
  (or ``async with AsyncStateManager(bot, url, **options) as sm``, or ``await sm.start()``)
  connects on the pool. Calling a coroutine before that raises ``StateManagerError``.
- **Callbacks.** ``on_promoted``, ``on_demoted`` and ``register_shutdown_handler`` take plain
  or coroutine functions; each call is scheduled on the manager's loop
  (``run_coroutine_threadsafe`` from the core's thread). Shutdown handlers are awaited by the
  shutdown (within ``shutdown_timeout``); promotion callbacks are not waited for.
- **Signals.** With ``install_signal_handlers`` (the default), SIGTERM and SIGINT are taken
  with ``loop.add_signal_handler``: a task runs ``shutdown()`` of every such manager on the
  loop (handlers, last state with ``shutdown_time`` if primary, release), then raises
  ``SystemExit(0)``. ``SystemExit`` raised in a task leaves ``loop.run_forever``, so
  ``asyncio.run(main())`` cancels the remaining tasks (their ``finally`` blocks run) and the
  program ends with exit status 0. A second signal during the shutdown ends the process at
  once (status 128 + signal number).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import logging
import math
import os
import signal
import weakref
from types import TracebackType
from typing import Any, Awaitable, Callable, Optional, TypeVar, Union

from . import StateManager
from ._quantshift_core import (
    CONFIG_DEFAULTS as _DEFAULTS,
    InvalidInputError,
    LeaseStalls,
    StateManagerError,
)

__all__ = ["AsyncStateManager"]

_log = logging.getLogger("quantshift_core")

_T = TypeVar("_T")
Callback = Callable[[], Union[None, Awaitable[None], object]]

# Threads per manager: a write, a read and a wait may overlap (the core serializes what
# must be serialized); more would only queue inside the core.
_WORKERS = 4
_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# Managers that shut down on a signal, per loop (handlers are per loop).
_signal_managers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, list[weakref.ReferenceType[AsyncStateManager]]
] = weakref.WeakKeyDictionary()
_shutting_down = False
# Set in the tasks that run shutdown handlers: their calls go through while the shutdown waits.
_in_shutdown_handler: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "quantshift_in_shutdown_handler", default=False
)


def _run_on_loop(
    loop: asyncio.AbstractEventLoop, callback: Callback, what: str
) -> concurrent.futures.Future[None]:
    """Schedules ``callback()`` (awaited if it returns an awaitable) on ``loop`` from any
    thread; its exception is logged and also set on the future returned."""

    async def invoke() -> None:
        if what == "shutdown handler":
            _in_shutdown_handler.set(True)
        try:
            outcome = callback()
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            _log.exception("%s callback raised", what)
            raise

    return asyncio.run_coroutine_threadsafe(invoke(), loop)


def _check_callable(f: object, what: str) -> None:
    if not callable(f):
        raise TypeError(f"{what} needs a function or coroutine function, got {type(f).__name__}")


class AsyncStateManager:
    """State, positions and the primary/standby role of one bot instance, for asyncio.

    ``AsyncStateManager(bot_name, redis_url=None, **options)`` takes exactly the options of
    ``StateManager`` and connects on ``await create(...)``, ``await start()`` or
    ``async with``. See the module documentation for the executor, callbacks and signals.
    """

    def __init__(
        self,
        bot_name: str,
        redis_url: Optional[str] = _DEFAULTS["redis_url"],
        *,
        state_ttl: float = _DEFAULTS["state_ttl"],
        position_ttl: float = _DEFAULTS["position_ttl"],
        heartbeat_ttl: float = _DEFAULTS["heartbeat_ttl"],
        lock_ttl: float = _DEFAULTS["lock_ttl"],
        renew_deadline: Optional[float] = _DEFAULTS["renew_deadline"],
        poll_interval: Optional[float] = _DEFAULTS["poll_interval"],
        install_signal_handlers: bool = _DEFAULTS["install_signal_handlers"],
        shutdown_timeout: float = _DEFAULTS["shutdown_timeout"],
        wait_replicas: int = _DEFAULTS["wait_replicas"],
        wait_timeout: float = _DEFAULTS["wait_timeout"],
        connect_timeout: float = _DEFAULTS["connect_timeout"],
        command_timeout: float = _DEFAULTS["command_timeout"],
        fast_failover: bool = _DEFAULTS["fast_failover"],
        failover_tolerance: float = _DEFAULTS["failover_tolerance"],
        key_layout: Optional[str] = _DEFAULTS["key_layout"],
    ) -> None:
        self._bot_name = bot_name
        self._redis_url = redis_url
        self._options: dict[str, Any] = dict(
            state_ttl=state_ttl,
            position_ttl=position_ttl,
            heartbeat_ttl=heartbeat_ttl,
            lock_ttl=lock_ttl,
            renew_deadline=renew_deadline,
            poll_interval=poll_interval,
            shutdown_timeout=shutdown_timeout,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            fast_failover=fast_failover,
            failover_tolerance=failover_tolerance,
            key_layout=key_layout,
        )
        self._install_signal_handlers = bool(install_signal_handlers)
        self._shutdown_timeout = float(shutdown_timeout)
        self._sync: Optional[StateManager] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._handles_signals = False
        self._shut_down = False
        # Made in start(): an Event made outside the loop binds to another loop on 3.9.
        self._shutdown_done: Optional[asyncio.Event] = None
        self._in_flight: set[asyncio.Future[Any]] = set()

    @classmethod
    async def create(
        cls, bot_name: str, redis_url: Optional[str] = None, **options: Any
    ) -> AsyncStateManager:
        """Constructs and connects: primary on return if nobody held the lease."""
        manager = cls(bot_name, redis_url, **options)
        await manager.start()
        return manager

    async def start(self) -> None:
        """Connects (on the manager's threads) and takes a free lease; once."""
        if self._loop is not None:
            raise StateManagerError("this AsyncStateManager was started already")
        self._loop = asyncio.get_running_loop()
        self._shutdown_done = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=_WORKERS, thread_name_prefix=f"quantshift-aio-{self._bot_name}"
        )
        make = functools.partial(
            StateManager,
            self._bot_name,
            self._redis_url,
            install_signal_handlers=False,
            **self._options,
        )
        executor = self._executor
        made = self._loop.run_in_executor(executor, make)
        try:
            self._sync = await made
        except BaseException:
            # Cancelled while connecting: the manager still comes; close it on the pool
            # (it would hold the lease until collected). Failed: a new start() may try again.
            def close_orphan(f: asyncio.Future[StateManager]) -> None:
                if not f.cancelled() and f.exception() is None:
                    executor.submit(f.result().close)
                executor.shutdown(wait=False)

            made.add_done_callback(close_orphan)
            self._loop = self._executor = None
            raise
        if self._install_signal_handlers:
            self._handles_signals = _register_for_signals(self, self._loop)

    def _manager(self) -> StateManager:
        if self._sync is None:
            raise StateManagerError(
                "this AsyncStateManager is not started: use `await AsyncStateManager.create(...)`,"
                " `await manager.start()` or `async with`"
            )
        return self._sync

    async def _call(self, method: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        assert self._loop is not None and self._executor is not None
        if self._shut_down and not _in_shutdown_handler.get():
            # A call made while the shutdown runs would race its final state save: it runs
            # after it, and a write then meets the released lease (NotPrimaryError).
            assert self._shutdown_done is not None
            await self._shutdown_done.wait()
        future = self._loop.run_in_executor(
            self._executor, functools.partial(method, *args, **kwargs)
        )
        self._in_flight.add(future)
        future.add_done_callback(self._in_flight.discard)
        return await future

    # Local and synchronous: no network.

    @property
    def bot_name(self) -> str:
        return self._bot_name

    @property
    def instance_id(self) -> str:
        return self._manager().instance_id

    @property
    def epoch(self) -> Optional[int]:
        """The fencing epoch of the lease held, while primary; else None."""
        return None if self._sync is None else self._sync.epoch

    @property
    def startup_warnings(self) -> list[str]:
        return self._manager().startup_warnings

    @property
    def closed(self) -> bool:
        return self._sync is not None and self._sync.closed

    @property
    def sync_manager(self) -> StateManager:
        """The blocking ``StateManager`` underneath (for code outside the loop)."""
        return self._manager()

    def is_primary(self) -> bool:
        """Local state only: no network, never blocks."""
        return self._sync is not None and self._sync.is_primary()

    def lease_stalls(self) -> LeaseStalls:
        """The lease thread's stall meter (local, no network): how late it woke and how
        long its lease round trips took, beside the tolerance."""
        return self._manager().lease_stalls()

    # Callbacks: plain or coroutine functions, run on the loop.

    def on_promoted(self, callback: Callback) -> None:
        """Called on the loop each time this instance becomes primary (once right away if
        it is primary already)."""
        _check_callable(callback, "on_promoted")
        loop, manager = self._started_loop(), self._manager()
        manager.on_promoted(lambda: _run_on_loop(loop, callback, "on_promoted"))

    def on_demoted(self, callback: Callback) -> None:
        """Called on the loop each time this instance stops being primary."""
        _check_callable(callback, "on_demoted")
        loop, manager = self._started_loop(), self._manager()
        manager.on_demoted(lambda: _run_on_loop(loop, callback, "on_demoted"))

    def register_shutdown_handler(self, handler: Callback) -> None:
        """Run on the loop by ``shutdown()``, which waits for it (within
        ``shutdown_timeout``); an exception is logged and the shutdown goes on."""
        _check_callable(handler, "register_shutdown_handler")
        loop, manager = self._started_loop(), self._manager()
        timeout = self._shutdown_timeout

        def run_and_wait() -> None:
            if loop.is_closed() or not loop.is_running():
                # E.g. closing at interpreter exit, after asyncio.run() returned.
                _log.warning("shutdown handler skipped: its event loop is no longer running")
                return
            _run_on_loop(loop, handler, "shutdown handler").result(timeout)

        manager.register_shutdown_handler(run_and_wait)

    def _started_loop(self) -> asyncio.AbstractEventLoop:
        self._manager()
        assert self._loop is not None
        return self._loop

    # Everything that talks to Redis: coroutines.

    async def heartbeat(self) -> None:
        await self._call(self._manager().heartbeat)

    async def save_state(self, state: dict[str, Any]) -> None:
        await self._call(self._manager().save_state, state)

    async def update_state(self, changes: dict[str, Any]) -> dict[str, Any]:
        return await self._call(self._manager().update_state, changes)

    async def load_state(self) -> Optional[dict[str, Any]]:
        return await self._call(self._manager().load_state)

    async def save_position(self, symbol: str, data: dict[str, Any]) -> None:
        await self._call(self._manager().save_position, symbol, data)

    async def load_positions(self) -> dict[str, dict[str, Any]]:
        return await self._call(self._manager().load_positions)

    async def clear_position(self, symbol: str) -> bool:
        return await self._call(self._manager().clear_position, symbol)

    async def apply_fill(
        self, symbol: str, quantity: float, price: float, fill_id: Optional[str] = None
    ) -> Optional[dict[str, Any]]:
        return await self._call(self._manager().apply_fill, symbol, quantity, price, fill_id)

    async def sync_positions(self, broker_positions: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return await self._call(self._manager().sync_positions, broker_positions)

    async def _ping(self) -> None:
        await self._call(self._manager()._ping)

    async def wait_until_primary(self, timeout: Optional[float] = None) -> bool:
        """True once this instance is primary; False after ``timeout`` seconds (None: no
        limit) or when the manager is closed. Cancelling the await stops the wait."""
        manager = self._manager()
        assert self._loop is not None
        if timeout is not None and timeout != 0 and not (math.isfinite(timeout) and timeout > 0):
            raise InvalidInputError(
                f"timeout must be a positive, finite number of seconds, got {timeout}"
            )
        give_up = None if timeout is None else self._loop.time() + timeout
        # Slices keep a worker from being held for long after a cancelled await.
        while True:
            left = None if give_up is None else max(0.0, give_up - self._loop.time())
            slice_ = 0.25 if left is None else min(0.25, left)
            if await self._call(manager.wait_until_primary, slice_):
                return True
            if manager.closed or (give_up is not None and self._loop.time() >= give_up):
                return False

    async def shutdown(self) -> None:
        """Runs the shutdown handlers, saves the last state with ``shutdown_time`` (if
        primary), releases the lease and announces it. Does not exit; idempotent."""
        if self._sync is None or self._shut_down:
            return
        self._shut_down = True
        assert self._loop is not None
        try:
            # Calls already sent finish first, so the final state is the last one written.
            if self._in_flight:
                await asyncio.wait(list(self._in_flight))
            await self._loop.run_in_executor(self._executor, self._sync.shutdown)
        finally:
            assert self._shutdown_done is not None
            self._shutdown_done.set()
            self._forget()

    async def close(self) -> None:
        """The same as ``shutdown()``."""
        await self.shutdown()

    def _forget(self) -> None:
        if self._handles_signals and self._loop is not None:
            self._handles_signals = False
            _unregister_for_signals(self, self._loop)
        # The pool stays: a call after close() gets the blocking face's answer, and idle
        # threads cost nothing (they end with the pool when the manager is collected).

    async def __aenter__(self) -> AsyncStateManager:
        if self._sync is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        if self._sync is None:
            return f"<AsyncStateManager bot_name={self._bot_name!r} not started>"
        return "<Async" + repr(self._sync)[1:]


def _register_for_signals(manager: AsyncStateManager, loop: asyncio.AbstractEventLoop) -> bool:
    refs = _signal_managers.setdefault(loop, [])
    refs[:] = [r for r in refs if r() is not None]
    if not refs:
        try:
            for sig in _SIGNALS:
                loop.add_signal_handler(sig, _on_signal, loop, sig)
        except (RuntimeError, ValueError, NotImplementedError) as err:
            # Not the main thread, or a loop without signal support (Windows).
            _log.warning(
                "AsyncStateManager for bot %r: SIGTERM/SIGINT handlers not installed (%s); "
                "call shutdown() yourself",
                manager.bot_name,
                err,
            )
            for sig in _SIGNALS:
                loop.remove_signal_handler(sig)
            return False
    refs.append(weakref.ref(manager))
    return True


def _unregister_for_signals(manager: AsyncStateManager, loop: asyncio.AbstractEventLoop) -> None:
    refs = _signal_managers.get(loop)
    if refs is None:
        return
    refs[:] = [r for r in refs if r() is not None and r() is not manager]
    if not refs and not _shutting_down and not loop.is_closed():
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)


def _on_signal(loop: asyncio.AbstractEventLoop, signum: int) -> None:
    global _shutting_down
    if _shutting_down:
        os._exit(128 + signum)
    _shutting_down = True
    managers = [m for m in (r() for r in _signal_managers.get(loop, [])) if m is not None]
    name = signal.Signals(signum).name
    _log.info("%s received: shutting down", name)
    task = loop.create_task(_shut_down_then_exit(managers, name))
    # The SystemExit leaves the loop as it is raised; marking it retrieved keeps asyncio
    # from logging it again ("Task exception was never retrieved").
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


async def _shut_down_then_exit(managers: list[AsyncStateManager], name: str) -> None:
    for manager in managers:
        try:
            await manager.shutdown()
        except Exception:
            _log.exception("shutdown of %r after %s failed", manager, name)
    raise SystemExit(0)
