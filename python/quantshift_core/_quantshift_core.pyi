"""The compiled module (PyO3). Use it through ``quantshift_core``."""

from collections.abc import Callable
from typing import Any, Optional

from typing_extensions import Self, TypeAlias, disjoint_base, final

__all__ = [
    "CONFIG_DEFAULTS",
    "CorruptDataError",
    "InvalidInputError",
    "LeaseStalls",
    "MAX_DEPTH",
    "NotPrimaryError",
    "NotReplicatedError",
    "RedisUnavailableError",
    "StallHistogram",
    "StateManager",
    "StateManagerError",
    "__version__",
    "run_cli",
]

__version__: str
MAX_DEPTH: int
# The options' defaults as the Rust core's Config has them (seconds as floats; None where
# the core derives the value); StateManager and AsyncStateManager take theirs from it.
CONFIG_DEFAULTS: dict[str, Any]

def run_cli(args: list[str]) -> int:
    """Runs the operator tool ``quantshift-state`` (``args[0]`` is the program name) and
    returns its exit code; output goes to the process's stdout and stderr."""

# What is stored: a dict with str keys of dict, list, tuple (stored as list), str, int
# (64-bit), float (finite), bool and None.
_JsonObject: TypeAlias = dict[str, Any]

class StateManagerError(Exception):
    """Base class of every error raised by quantshift_core."""

class NotPrimaryError(StateManagerError):
    """A write by an instance that does not hold the primary lease; nothing changed."""

class RedisUnavailableError(StateManagerError, ConnectionError):
    """Redis could not be reached, timed out, or dropped the connection."""

class InvalidInputError(StateManagerError, ValueError):
    """An argument the library refuses (names, values, options)."""

class CorruptDataError(StateManagerError, ValueError):
    """A value stored in Redis is not the JSON object expected."""

class NotReplicatedError(StateManagerError):
    """A write applied on the master but not confirmed by the requested replicas in time."""

@final
class StallHistogram:
    """A histogram of the stall meter: counts since the manager started, durations in
    seconds; quantiles are upper bounds; ``buckets`` are ``(upper bound, count)`` pairs, not
    cumulative, the last bound ``inf``."""

    @property
    def count(self) -> int: ...
    @property
    def sum_s(self) -> float: ...
    @property
    def max_s(self) -> float: ...
    @property
    def p50_s(self) -> float: ...
    @property
    def p99_s(self) -> float: ...
    @property
    def buckets(self) -> list[tuple[float, int]]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class LeaseStalls:
    """The lease thread's stall meter: how late it woke, its lease round trips, the
    tolerance they eat into, and the records its threads dropped."""

    @property
    def wake_late(self) -> StallHistogram: ...
    @property
    def round_trip(self) -> StallHistogram: ...
    @property
    def tolerance_s(self) -> float: ...
    @property
    def dropped_records(self) -> int: ...
    def to_dict(self) -> dict[str, Any]: ...

@disjoint_base
class StateManager:
    def __new__(
        cls,
        bot_name: str,
        redis_url: Optional[str] = None,
        *,
        state_ttl: float = 3600.0,
        position_ttl: float = 86400.0,
        heartbeat_ttl: float = 60.0,
        lock_ttl: float = 30.0,
        renew_deadline: Optional[float] = None,
        poll_interval: Optional[float] = None,
        install_signal_handlers: bool = True,
        shutdown_timeout: float = 20.0,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
        connect_timeout: float = 2.0,
        command_timeout: float = 2.0,
        fast_failover: bool = True,
        failover_tolerance: float = 0.2,
        key_layout: Optional[str] = None,
    ) -> Self: ...
    @property
    def bot_name(self) -> str: ...
    @property
    def instance_id(self) -> str: ...
    @property
    def key_layout(self) -> str: ...
    @property
    def epoch(self) -> Optional[int]: ...
    @property
    def startup_warnings(self) -> list[str]: ...
    @property
    def closed(self) -> bool: ...
    def _redis_py_options(self) -> dict[str, Any]: ...
    def _ping(self) -> None: ...
    def register_shutdown_handler(self, handler: Callable[[], object]) -> None: ...
    def on_promoted(self, callback: Callable[[], object]) -> None: ...
    def on_demoted(self, callback: Callable[[], object]) -> None: ...
    def lease_stalls(self) -> LeaseStalls: ...
    def heartbeat(self) -> None: ...
    def save_state(self, state: _JsonObject) -> None: ...
    def update_state(self, changes: _JsonObject) -> _JsonObject: ...
    def load_state(self) -> Optional[_JsonObject]: ...
    def save_position(self, symbol: str, data: _JsonObject) -> None: ...
    def load_positions(self) -> dict[str, _JsonObject]: ...
    def clear_position(self, symbol: str) -> bool: ...
    def apply_fill(
        self, symbol: str, quantity: float, price: float, fill_id: Optional[str] = None
    ) -> Optional[_JsonObject]: ...
    def sync_positions(self, broker_positions: dict[str, _JsonObject]) -> _JsonObject: ...
    def is_primary(self) -> bool: ...
    def wait_until_primary(self, timeout: Optional[float] = None) -> bool: ...
    def shutdown(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *_exc_info: object) -> bool: ...
