"""An installed wheel works on this interpreter: import, the seed usage block, a failover
between two processes, and the operator tool through its console script and `python -m`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
import uuid

import pytest

import quantshift_core

from processes import BotProcess
from redis_server import RedisServer
from test_seed_usage import SEED_USAGE

LOCK_TTL = 1.0


@pytest.fixture(scope="module")
def server():
    with RedisServer() as server:
        yield server


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=dict(os.environ, **env), capture_output=True, text=True, timeout=60
    )


def test_import_the_installed_abi3_module():
    here = os.path.dirname(os.path.abspath(__file__))
    # The wheel, not the source tree, is what runs.
    assert not quantshift_core.__file__.startswith(os.path.dirname(os.path.dirname(here)))
    extension = quantshift_core._core.__file__
    assert extension.endswith(".abi3.so"), extension
    assert quantshift_core.__version__
    assert issubclass(quantshift_core.NotPrimaryError, quantshift_core.StateManagerError)


def test_seed_usage(server: RedisServer):
    done = run([sys.executable, "-c", SEED_USAGE], QUANTSHIFT_REDIS_URL=server.url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Recovered state from: 20"), lines
    assert lines[1:] == ["AAPL: 10 shares @ $150.0", "This instance is primary"], lines
    state = json.loads(server.client().get("bot:equity-bot:state"))
    assert state["strategy"] == "moving_average" and "shutdown_time" in state


def test_failover_between_two_processes(server: RedisServer):
    bot = f"smoke-{uuid.uuid4().hex[:8]}"
    first = BotProcess(server.url, bot, LOCK_TTL)
    second = None
    try:
        old_epoch = int(first.wait_for("PROMOTED", 15).details[0])
        second = BotProcess(server.url, bot, LOCK_TTL)
        assert second.wait_for("READY", 15).details[1] == "standby"
        killed_at = time.time()
        os.kill(first.pid, signal.SIGKILL)
        promoted = second.wait_for("PROMOTED", 10)
        assert promoted.at - killed_at <= LOCK_TTL + 0.5
        assert int(promoted.details[0]) > old_epoch
    finally:
        for process in (first, second):
            if process is not None:
                process.kill()


def test_the_operator_tool(server: RedisServer):
    bot = f"smoke-{uuid.uuid4().hex[:8]}"
    manager = quantshift_core.StateManager(
        bot, server.url, lock_ttl=LOCK_TTL, install_signal_handlers=False
    )
    try:
        assert manager.wait_until_primary(10)
        script = os.path.join(sysconfig.get_path("scripts"), "quantshift-state")
        done = run([script, "--url", server.url, "status", bot, "--json"])
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        assert status["bots"][0]["health"] == "standby missing", status
        checked = run([script, "--url", server.url, "status", bot, "--check"])
        assert checked.returncode == 1, checked
    finally:
        manager.close()
    helped = run([sys.executable, "-m", "quantshift_core", "--help"])
    assert helped.returncode == 0, helped.stderr
    assert "Usage: quantshift-state [--url URL] status" in helped.stdout
    wrong = run([sys.executable, "-m", "quantshift_core", "frobnicate"])
    assert wrong.returncode == 64, wrong
    assert wrong.stderr.startswith("quantshift-state: error: "), wrong.stderr
