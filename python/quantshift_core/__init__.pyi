from typing import Optional

import redis

from . import _quantshift_core as _core
from ._quantshift_core import (
    CorruptDataError as CorruptDataError,
    InvalidInputError as InvalidInputError,
    LeaseStalls as LeaseStalls,
    NotPrimaryError as NotPrimaryError,
    NotReplicatedError as NotReplicatedError,
    RedisUnavailableError as RedisUnavailableError,
    StallHistogram as StallHistogram,
    StateManagerError as StateManagerError,
    __version__ as __version__,
)

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

class StateManager(_core.StateManager):
    def __init__(
        self,
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
    ) -> None: ...
    @property
    def redis_client(self) -> redis.Redis: ...
    def shutdown(self) -> None: ...
    def close(self) -> None: ...
