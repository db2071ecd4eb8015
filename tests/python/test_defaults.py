"""Every front end's option defaults are the Rust core's: the compiled class's signature, the
Python wrappers (StateManager, AsyncStateManager) and the three stubs that type them all say
what ``Config::new`` says (``_quantshift_core.CONFIG_DEFAULTS``)."""

from __future__ import annotations

import ast
import inspect
import os

import quantshift_core
from quantshift_core import _quantshift_core
from quantshift_core.aio import AsyncStateManager

DEFAULTS = _quantshift_core.CONFIG_DEFAULTS
PACKAGE = os.path.dirname(os.path.abspath(quantshift_core.__file__))
SOURCE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "python",
    "quantshift_core",
)


def signature_defaults(callable_: object) -> dict[str, object]:
    return {
        name: p.default
        for name, p in inspect.signature(callable_).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def test_the_core_names_every_option_once():
    assert set(DEFAULTS) == {
        "redis_url",
        "state_ttl",
        "position_ttl",
        "heartbeat_ttl",
        "lock_ttl",
        "renew_deadline",
        "poll_interval",
        "install_signal_handlers",
        "shutdown_timeout",
        "wait_replicas",
        "wait_timeout",
        "connect_timeout",
        "command_timeout",
        "fast_failover",
        "failover_tolerance",
        "key_layout",
    }
    # The contract's figures (docs/contract.md §1, §2).
    assert DEFAULTS["state_ttl"] == 3600 and DEFAULTS["lock_ttl"] == 30
    assert DEFAULTS["fast_failover"] is True and DEFAULTS["failover_tolerance"] == 0.2


def test_every_signature_has_the_core_defaults():
    fronts = {
        "compiled StateManager": _quantshift_core.StateManager,
        "StateManager": quantshift_core.StateManager,
        "AsyncStateManager": AsyncStateManager,
    }
    for label, front in fronts.items():
        defaults = signature_defaults(front)
        assert defaults == DEFAULTS, f"{label}: {defaults} != {DEFAULTS}"
        for name, value in defaults.items():
            assert type(value) is type(DEFAULTS[name]), f"{label}.{name}: {value!r}"


def stub_defaults(path: str, class_name: str) -> dict[str, object]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name in ("__init__", "__new__"):
                    args = item.args
                    positional = args.posonlyargs + args.args
                    pairs = list(
                        zip(positional[len(positional) - len(args.defaults) :], args.defaults)
                    )
                    pairs += [
                        (a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None
                    ]
                    return {a.arg: ast.literal_eval(d) for a, d in pairs}
    raise AssertionError(f"{path}: no {class_name}.__init__ / __new__")


def test_every_stub_has_the_core_defaults():
    for stub, class_name in [
        ("_quantshift_core.pyi", "StateManager"),
        ("__init__.pyi", "StateManager"),
        ("aio.pyi", "AsyncStateManager"),
    ]:
        for root in (SOURCE, PACKAGE):
            path = os.path.join(root, stub)
            if os.path.exists(path):
                defaults = stub_defaults(path, class_name)
                assert defaults == DEFAULTS, f"{path}: {defaults} != {DEFAULTS}"
