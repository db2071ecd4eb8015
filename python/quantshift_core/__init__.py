"""quantshift_core: a trading bot's state, positions and primary/standby role in Redis.

A hot-standby bot takes over when the primary dies: never two primaries (a fenced lease),
nothing acknowledged lost, a clear error for every bad input.

``StateManager`` here is the compiled class plus what belongs to Python: SIGTERM / SIGINT
handlers installed with the ``signal`` module (ending in ``SystemExit(0)``), the optional
redis-py client ``redis_client``, and closing at interpreter exit. Rust log records reach
the ``logging`` logger ``quantshift_core``.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from types import FrameType
from typing import TYPE_CHECKING, Any, Optional

from . import _quantshift_core as _core
from ._quantshift_core import (
    CorruptDataError,
    InvalidInputError,
    LeaseStalls,
    NotPrimaryError,
    NotReplicatedError,
    RedisUnavailableError,
    StallHistogram,
    StateManagerError,
    __version__,
)

if TYPE_CHECKING:
    import redis

# The options' defaults come from the Rust core's Config (tests/python/test_defaults.py holds
# every signature and stub to them).
_DEFAULTS: dict[str, Any] = _core.CONFIG_DEFAULTS

__all__ = [
    "CorruptDataError",
    "InvalidInputError",
    "LeaseStalls",
    "NotPrimaryError",
    "NotReplicatedError",
    "RedisUnavailableError",
    "StallHistogram",
    "StateManager",
    "StateManagerError",
    "__version__",
]

_log = logging.getLogger("quantshift_core")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# Reentrant: a manager collected while the lock is held runs _forget_collected in this thread.
_lock = threading.RLock()
# Managers to shut down on a signal, in creation order; every live manager (closed at exit).
_on_signal_managers: list[weakref.ReferenceType[StateManager]] = []
_live: weakref.WeakSet[StateManager] = weakref.WeakSet()
# The host's handlers we replaced, restored when the last of our managers is gone.
_previous_handlers: dict[int, Any] = {}
_shutting_down = False


def _on_signal(signum: int, frame: Optional[FrameType]) -> None:
    """SIGTERM / SIGINT on the main thread: shut every registered manager down, exit 0."""
    global _shutting_down
    if _shutting_down:
        os._exit(128 + signum)
    with _lock:
        managers = [m for m in (ref() for ref in _on_signal_managers) if m is not None]
        if not managers:
            # Every manager was collected without close(): the signal is the host's again.
            previous = _previous_handlers.get(signum, signal.SIG_DFL)
            _restore_previous_handlers()
    if not managers:
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            os.kill(os.getpid(), signum)  # the default action, now that it is restored
        return
    _shutting_down = True
    # A second signal during the shutdown ends the process at once (default action), even
    # while the main thread waits for the shutdown inside the compiled code.
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    name = signal.Signals(signum).name
    _log.info("%s received: shutting down", name)
    for manager in managers:
        try:
            manager.shutdown()
        except Exception:
            _log.exception("shutdown of %r after %s failed", manager, name)
    raise SystemExit(0)


def _restore_previous_handlers() -> None:
    """Puts the host's handlers back (main thread only; with _lock held)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, previous in _previous_handlers.items():
        if signal.getsignal(sig) is _on_signal:
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
    _previous_handlers.clear()


def _register_for_signals(manager: StateManager) -> bool:
    if threading.current_thread() is not threading.main_thread():
        _log.warning(
            "StateManager for bot %r created outside the main thread: SIGTERM/SIGINT "
            "handlers not installed (Python allows them only there); call shutdown() yourself",
            manager.bot_name,
        )
        return False
    with _lock:
        _on_signal_managers[:] = [r for r in _on_signal_managers if r() is not None]
        _on_signal_managers.append(weakref.ref(manager, _forget_collected))
        if not _previous_handlers:
            for sig in _SIGNALS:
                _previous_handlers[sig] = signal.signal(sig, _on_signal)
    return True


def _unregister_for_signals(manager: Optional[StateManager]) -> None:
    with _lock:
        _on_signal_managers[:] = [
            r for r in _on_signal_managers if r() is not None and r() is not manager
        ]
        if not _on_signal_managers and _previous_handlers and not _shutting_down:
            _restore_previous_handlers()


def _forget_collected(_: weakref.ReferenceType[StateManager]) -> None:
    _unregister_for_signals(None)


def _after_fork_in_child() -> None:
    """A forked child owns none of the parent's managers: it must neither close them (that
    would release the parent's lease) nor shut them down on a signal."""
    global _lock
    _lock = threading.RLock()  # another thread of the parent may have held it
    _on_signal_managers.clear()
    _live.clear()
    _restore_previous_handlers()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# The core's loggers (one per Rust module that logs), held back while closing at exit.
_CORE_LOGGERS = ("manager", "lease", "store", "shutdown")


class _HoldRecords(logging.Filter):
    """Keeps the records instead of letting them through (see _close_all_at_exit)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


def _close_quietly_at_exit(manager: StateManager) -> None:
    """Closes ``manager``; on failure (typically Redis gone) logs one warning line instead of
    the core's step-by-step errors and a traceback: at exit nobody can act on them, and the
    lease expires by itself. When the close succeeds, the held records are let through."""
    names = {f"quantshift_core.{name}" for name in _CORE_LOGGERS}
    names.update(n for n in logging.root.manager.loggerDict if n.startswith("quantshift_core."))
    loggers = [logging.getLogger(name) for name in sorted(names)]
    hold = _HoldRecords()
    for logger in loggers:
        logger.addFilter(hold)
    try:
        manager.close()
        failure: Optional[Exception] = None
    except Exception as err:
        failure = err
    finally:
        for logger in loggers:
            logger.removeFilter(hold)
    if failure is None:
        for record in hold.records:
            logging.getLogger(record.name).handle(record)
        return
    reason = str(failure).splitlines()[0] if str(failure) else type(failure).__name__
    _log.warning(
        "closing %r at exit failed (%s: %s); what could not be written is left as it "
        "was, and the lease expires by itself",
        manager,
        type(failure).__name__,
        reason,
    )


@atexit.register
def _close_all_at_exit() -> None:
    for manager in list(_live):
        _close_quietly_at_exit(manager)


def _redis_py_client(options: dict[str, Any]) -> redis.Redis:
    """A redis-py client from the manager's connection options (URL or Sentinels, password,
    TLS files, timeouts)."""
    try:
        import redis
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "StateManager.redis_client needs redis-py: pip install 'quantshift-core[redis]'"
        ) from err
    timeout = options["timeout"]
    common: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    tls: dict[str, Any] = {}
    if options["ssl"]:
        tls = {k: options[k] for k in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile") if options[k]}
    if "sentinels" in options:
        from redis.sentinel import Sentinel

        sentinel_kwargs: dict[str, Any] = dict(common)
        if options["sentinel_password"]:
            sentinel_kwargs["password"] = options["sentinel_password"]
        if options["sentinel_username"]:
            sentinel_kwargs["username"] = options["sentinel_username"]
        if options["ssl"]:
            sentinel_kwargs.update(ssl=True, **tls)
            common.update(ssl=True, **tls)
        sentinel = Sentinel(
            [tuple(s) for s in options["sentinels"]],
            sentinel_kwargs=sentinel_kwargs,
            db=options["db"],
            username=options["username"],
            password=options["password"],
            **common,
        )
        return sentinel.master_for(options["service_name"])
    if "cluster_nodes" in options:
        from redis.cluster import ClusterNode, RedisCluster

        if options["ssl"]:
            common.update(ssl=True, **tls)
        return RedisCluster(  # type: ignore[return-value]
            startup_nodes=[ClusterNode(host, port) for host, port in options["cluster_nodes"]],
            username=options["username"],
            password=options["password"],
            **common,
        )
    if options["password"]:
        # Used only when the URL carries none (values in the URL win in redis-py).
        common["password"] = options["password"]
    return redis.Redis.from_url(options["url"], **common, **tls)


class StateManager(_core.StateManager):
    """State, positions and the primary/standby role of one bot instance, kept in Redis.

    ``StateManager(bot_name, redis_url=None, *, state_ttl=3600, position_ttl=86400,
    heartbeat_ttl=60, lock_ttl=30, renew_deadline=None, poll_interval=None,
    install_signal_handlers=True, shutdown_timeout=20.0, wait_replicas=0, wait_timeout=1.0,
    connect_timeout=2.0, command_timeout=2.0, fast_failover=True, failover_tolerance=0.2,
    key_layout=None)``; durations in seconds.
    With ``wait_replicas=n`` every fenced write (and the lease) waits for n replicas to confirm
    it, else raises ``NotReplicatedError``. With ``fast_failover`` (the default) a standby
    takes over about 0.3-0.5 s after the primary stops renewing (a crash, a freeze, a
    partition), on any Redis; a stall shorter than ``failover_tolerance`` never moves the
    lease. ``key_layout`` names the keys: ``"plain"`` (``bot:<name>:state``, the default on
    one server) or ``"hash_tagged"`` (``bot:{<name>}:state``, every key of the bot in one
    Redis Cluster slot; the default, and the only layout allowed, with a
    ``redis+cluster://`` URL). TLS files and Sentinel credentials come from the
    environment (``QUANTSHIFT_TLS_CA_FILE``, ``QUANTSHIFT_SENTINEL_PASSWORD``, ...).

    If nobody holds the lease, the instance is primary when the constructor returns;
    otherwise it is standby, and takes over when the lease is released or expires. With
    ``install_signal_handlers`` (and when created on the main thread), SIGTERM and SIGINT run
    ``shutdown()`` and raise ``SystemExit(0)``; a second signal during the shutdown ends the
    process at once. ``on_promoted`` / ``on_demoted`` callbacks and shutdown handlers are
    called with no arguments, on background threads.
    """

    def __init__(
        self,
        bot_name: str,
        redis_url: str | None = _DEFAULTS["redis_url"],
        *,
        state_ttl: float = _DEFAULTS["state_ttl"],
        position_ttl: float = _DEFAULTS["position_ttl"],
        heartbeat_ttl: float = _DEFAULTS["heartbeat_ttl"],
        lock_ttl: float = _DEFAULTS["lock_ttl"],
        renew_deadline: float | None = _DEFAULTS["renew_deadline"],
        poll_interval: float | None = _DEFAULTS["poll_interval"],
        install_signal_handlers: bool = _DEFAULTS["install_signal_handlers"],
        shutdown_timeout: float = _DEFAULTS["shutdown_timeout"],
        wait_replicas: int = _DEFAULTS["wait_replicas"],
        wait_timeout: float = _DEFAULTS["wait_timeout"],
        connect_timeout: float = _DEFAULTS["connect_timeout"],
        command_timeout: float = _DEFAULTS["command_timeout"],
        fast_failover: bool = _DEFAULTS["fast_failover"],
        failover_tolerance: float = _DEFAULTS["failover_tolerance"],
        key_layout: str | None = _DEFAULTS["key_layout"],
    ) -> None:
        # The compiled __new__ has connected and started the lease thread already.
        self._client: redis.Redis | None = None
        self._client_lock = threading.Lock()
        self._handles_signals = bool(install_signal_handlers) and _register_for_signals(self)
        _live.add(self)

    @property
    def redis_client(self) -> redis.Redis:
        """A redis-py client on the same URL, made on first use (extra ``[redis]``)."""
        with self._client_lock:
            if self._client is None:
                self._client = _redis_py_client(self._redis_py_options())
            return self._client

    def shutdown(self) -> None:
        """Runs the shutdown handlers, saves the last state with ``shutdown_time`` (if
        primary), releases the lease and announces it. Does not exit."""
        try:
            super().shutdown()
        finally:
            self._forget()

    def close(self) -> None:
        """The same as ``shutdown()``."""
        self.shutdown()

    def _forget(self) -> None:
        _live.discard(self)
        if self._handles_signals:
            self._handles_signals = False
            _unregister_for_signals(self)
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
