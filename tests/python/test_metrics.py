"""The Prometheus exporter `quantshift-state metrics` against real redis-server processes and
real bots: scrapes parsed with Prometheus' own text parser (prometheus_client.parser), values
compared with `quantshift-state status --json`, a kill -9 of the primary seen as has_primary
0 then 1, Redis down, other paths, the password, and the example alert rules and dashboard
(examples/monitoring/) checked against a real scrape."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import quantshift_core

from conftest import MEASURED, ManagerFactory, require_tool
from processes import BotProcess, kill_all
from redis_server import RedisServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MONITORING = os.path.join(ROOT, "examples", "monitoring")
TOOL = [sys.executable, "-m", "quantshift_core"]
BOT_METRICS = [
    "quantshift_bot_has_primary",
    "quantshift_bot_standbys",
    "quantshift_bot_epoch",
    "quantshift_bot_lease_ttl_seconds",
    "quantshift_bot_lease_renewal_age_seconds",
    "quantshift_bot_lease_deadline_seconds",
    "quantshift_bot_heartbeat_age_seconds",
    "quantshift_bot_state_age_seconds",
    "quantshift_bot_positions",
]
WARNING_KINDS = {
    "eviction_policy",
    "eviction_policy_unreadable",
    "persistence_off",
    "persistence_unreadable",
    "not_master",
    "role_unreadable",
    "split_brain_unguarded",
}

# A scrape: {metric name: {label values: value}}, and the HELP text of each family.
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


class Exporter:
    """`quantshift-state metrics` on a free port (--listen 127.0.0.1:0, the port read from
    its start-up line), stopped by stop()."""

    def __init__(self, url: str, *bots: str, options: tuple[str, ...] = ()) -> None:
        args = [*TOOL, "--url", url, *options, "metrics", "--listen", "127.0.0.1:0", *bots]
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.stderr = ""
        self._started = threading.Event()
        self.port = 0
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self._started.wait(20):
            self.stop(check=False)
            raise AssertionError(f"the exporter did not start: {self.stderr}")

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr += line
            found = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
            if found and not self._started.is_set():
                self.port = int(found.group(1))
                self._started.set()
        self._started.set()

    def get(self, path: str, method: str = "GET") -> tuple[int, str, str]:
        """Status, Content-Type and body of one request."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, response.headers["Content-Type"], response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.headers["Content-Type"], err.read().decode()

    def scrape(self) -> tuple[Samples, dict[str, str], str]:
        status, content_type, body = self.get("/metrics")
        assert status == 200, body
        assert content_type.startswith("text/plain; version=0.0.4"), content_type
        samples: Samples = {}
        helps: dict[str, str] = {}
        for family in text_string_to_metric_families(body):
            # The stall meter: histograms and a counter; everything else is a gauge.
            if family.name.startswith("quantshift_lease_"):
                assert family.type in ("gauge", "histogram", "counter"), family
            else:
                assert family.type == "gauge", family
            helps[family.name] = family.documentation
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                samples.setdefault(sample.name, {})[labels] = sample.value
        return samples, helps, body

    def stop(self, check: bool = True) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                raise AssertionError(f"the exporter ignored SIGINT: {self.stderr}") from None
        if check:
            assert self.process.returncode == 0, self.stderr


@pytest.fixture
def exporters() -> Iterator[list[Exporter]]:
    started: list[Exporter] = []
    yield started
    for exporter in started:
        exporter.stop(check=False)


def bot_values(samples: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["bot"]: value for labels, value in samples.get(name, {}).items()}


def instance_values(samples: Samples, name: str) -> dict[tuple[str, str], float]:
    """{(bot, instance_id): value} of a per-instance series (histograms: without `le`)."""
    values = {}
    for labels, value in samples.get(name, {}).items():
        named = dict(labels)
        if "le" not in named:
            values[(named["bot"], named["instance_id"])] = value
    return values


def status_json(url: str, *bots: str) -> dict[str, Any]:
    done = subprocess.run(
        [*TOOL, "--url", url, "status", "--json", *bots],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def assert_matches_status(samples: Samples, status: dict[str, Any]) -> None:
    """The scrape says what `status --json` says, bot by bot; a value the status reports as
    null has no series. Durations agree within the time between the two reads."""
    for bot in status["bots"]:
        name = bot["bot"]
        seen = {metric: bot_values(samples, metric).get(name) for metric in BOT_METRICS}
        assert seen["quantshift_bot_has_primary"] == (1 if bot["primary"] else 0), (name, seen)
        assert seen["quantshift_bot_standbys"] == len(bot["standbys"]), (name, seen, bot)
        assert seen["quantshift_bot_positions"] == bot["positions"], (name, seen, bot)
        assert seen["quantshift_bot_epoch"] == bot["epoch"], (name, seen, bot)
        for metric, field, tolerance in [
            ("quantshift_bot_lease_ttl_seconds", "lease_ttl_seconds", 1.0),
            ("quantshift_bot_lease_renewal_age_seconds", "lease_renewal_age_seconds", 1.0),
            ("quantshift_bot_heartbeat_age_seconds", "heartbeat_age_seconds", 1.0),
            ("quantshift_bot_state_age_seconds", "state_age_seconds", 2.0),
        ]:
            value = seen[metric]
            if bot[field] is None:
                assert value is None, (name, metric, seen)
            else:
                assert value is not None, (name, metric, seen)
                assert value >= 0
                assert abs(value - bot[field]) < tolerance, (name, metric, seen, bot)
        deadline = seen["quantshift_bot_lease_deadline_seconds"]
        if bot["lease_deadline_in_seconds"] is None:
            assert deadline is None, (name, seen)
        else:
            assert deadline is not None and abs(deadline - bot["lease_deadline_in_seconds"]) < 1.0
        # The stall meters both reads saw agree (one may be published between the reads).
        tolerances = instance_values(samples, "quantshift_lease_tolerance_seconds")
        for instance_id, stalls in bot["lease_stalls"].items():
            if (name, instance_id) in tolerances:
                assert tolerances[(name, instance_id)] == pytest.approx(stalls["tolerance_seconds"])
    warnings = {
        dict(labels)["kind"]: v for labels, v in samples["quantshift_redis_warning"].items()
    }
    assert set(warnings) == WARNING_KINDS, warnings
    assert sum(warnings.values()) == len(status["redis"]["warnings"]), (warnings, status)


@pytest.fixture
def running_bot(
    make_manager: ManagerFactory, redis_url: str, bot_name: str
) -> quantshift_core.StateManager:
    """A primary with three positions and a state, and a standby."""
    primary = make_manager()
    assert primary.wait_until_primary(5)
    standby = make_manager()
    assert not standby.is_primary()
    for symbol in ["AAPL", "MSFT", "ES:FUT"]:
        primary.save_position(symbol, {"quantity": 1})
    primary.save_state({"cash": 100})
    # The standby registered as live.
    give_up = time.monotonic() + 10
    while time.monotonic() < give_up:
        if len(status_json(redis_url, bot_name)["bots"][0]["standbys"]) == 1:
            break
        time.sleep(0.05)
    return primary


def test_a_scrape_matches_status_json(
    running_bot: quantshift_core.StateManager,
    make_manager: ManagerFactory,
    exporters: list[Exporter],
    redis_url: str,
    bot_name: str,
) -> None:
    lone = f"{bot_name}-lone"
    make_manager(lone).wait_until_primary(5)  # a primary without state or standby
    ghost = f"{bot_name}-ghost"  # nothing in Redis
    bots = [bot_name, lone, ghost]
    named = Exporter(redis_url, *bots)
    exporters.append(named)
    # Every bot found, when none is named (the session's Redis holds other tests' bots too).
    found = Exporter(redis_url)
    exporters.append(found)

    # The ghost has no key: it is not found.
    for exporter, compared in [(named, bots), (found, [bot_name, lone])]:
        before = status_json(redis_url, *compared)
        samples, helps, _ = exporter.scrape()
        after = status_json(redis_url, *compared)
        assert samples["quantshift_redis_up"] == {(): 1.0}
        # A change of primary or standbys between the reads would make the comparison moot.
        assert [b["primary"] for b in before["bots"]] == [b["primary"] for b in after["bots"]]
        assert_matches_status(samples, after)
        assert all(helps[name] for name in helps), helps
        if exporter is named:
            assert set(bot_values(samples, "quantshift_bot_has_primary")) == set(bots)
        else:
            assert {bot_name, lone} <= set(bot_values(samples, "quantshift_bot_has_primary"))
            assert ghost not in bot_values(samples, "quantshift_bot_has_primary")
    samples, _, _ = named.scrape()
    assert bot_values(samples, "quantshift_bot_positions")[bot_name] == 3
    assert bot_values(samples, "quantshift_bot_standbys")[bot_name] == 1
    # Values that do not exist have no series: no state for the lone primary, nothing at all
    # but has_primary 0, standbys 0 and positions 0 for the ghost.
    assert lone not in bot_values(samples, "quantshift_bot_state_age_seconds")
    assert lone in bot_values(samples, "quantshift_bot_heartbeat_age_seconds")
    assert {metric for metric in BOT_METRICS if ghost in bot_values(samples, metric)} == {
        "quantshift_bot_has_primary",
        "quantshift_bot_standbys",
        "quantshift_bot_positions",
    }
    # The test Redis runs without persistence: the status warns, and so does the scrape.
    warnings = samples["quantshift_redis_warning"]
    assert warnings[(("kind", "persistence_off"),)] == 1
    assert warnings[(("kind", "eviction_policy"),)] == 0
    named.stop()
    found.stop()


def test_the_hash_tagged_layout(
    make_manager: ManagerFactory, exporters: list[Exporter], redis_url: str, bot_name: str
) -> None:
    """With --key-layout hash_tagged the exporter reads bots whose keys are bot:{name}:..."""
    tagged = make_manager(key_layout="hash_tagged")
    assert tagged.wait_until_primary(5)
    tagged.save_position("AAPL", {"quantity": 1})
    named = Exporter(redis_url, bot_name, options=("--key-layout", "hash_tagged"))
    exporters.append(named)
    plain = Exporter(redis_url, bot_name)
    exporters.append(plain)
    samples, _, _ = named.scrape()
    assert bot_values(samples, "quantshift_bot_has_primary")[bot_name] == 1
    assert bot_values(samples, "quantshift_bot_positions")[bot_name] == 1
    assert bot_values(samples, "quantshift_bot_epoch")[bot_name] == tagged.epoch
    # In the plain layout (the default on one server) the bot has no keys.
    samples, _, _ = plain.scrape()
    assert bot_values(samples, "quantshift_bot_has_primary")[bot_name] == 0
    named.stop()
    plain.stop()
    bad = subprocess.run(
        [*TOOL, "--key-layout", "sideways", "metrics"], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 64 and "--key-layout" in bad.stderr, bad


def test_kill_9_of_the_primary_is_has_primary_0_then_1(
    redis_url: str, bot_name: str, exporters: list[Exporter]
) -> None:
    started: list[BotProcess] = []
    try:
        # Without fast failover the standby takes over only once the lease expired.
        primary = BotProcess(redis_url, bot_name, 1.0, "no-fast")
        started.append(primary)
        epoch = int(primary.wait_for("PROMOTED", 15).details[0])
        standby = BotProcess(redis_url, bot_name, 1.0, "no-fast")
        started.append(standby)
        assert standby.wait_for("READY", 15).details[1] == "standby"
        exporter = Exporter(redis_url, bot_name)
        exporters.append(exporter)

        history: list[float | None] = []

        def look_until(metric: str, value: float, timeout: float) -> dict[str, float | None]:
            """Scrapes until `metric` of the bot is `value` (bounded); the last look."""
            give_up = time.monotonic() + timeout
            while True:
                samples, _, _ = exporter.scrape()
                seen = {name: bot_values(samples, name).get(bot_name) for name in BOT_METRICS}
                history.append(seen["quantshift_bot_has_primary"])
                if seen[metric] == value or time.monotonic() > give_up:
                    assert seen[metric] == value, (metric, seen, history)
                    return seen
                time.sleep(0.05)

        seen = look_until("quantshift_bot_standbys", 1, 10)
        assert seen["quantshift_bot_has_primary"] == 1 and seen["quantshift_bot_epoch"] == epoch

        # The standby is held still while the primary dies, so the moment without a primary
        # (lease expired, nobody took it yet) lasts until it runs again, and the scrape can
        # see it; then it takes over as it would have.
        os.kill(standby.pid, signal.SIGSTOP)
        os.kill(primary.pid, signal.SIGKILL)
        seen = look_until("quantshift_bot_has_primary", 0, 15)
        assert seen["quantshift_bot_lease_ttl_seconds"] is None, seen
        assert seen["quantshift_bot_epoch"] == epoch

        os.kill(standby.pid, signal.SIGCONT)
        seen = look_until("quantshift_bot_has_primary", 1, 15)
        # Epochs carry the server's time in ms: compared, not counted.
        assert seen["quantshift_bot_epoch"] > epoch, seen
        assert int(standby.wait_for("PROMOTED", 10).details[0]) == seen["quantshift_bot_epoch"]
        exporter.stop()
    finally:
        kill_all(started)


def test_a_killed_and_a_closed_standby_leave_the_standbys_within_2_s(
    make_manager: ManagerFactory, redis_url: str, bot_name: str, exporters: list[Exporter]
) -> None:
    """`kill -9` of a standby process and close() of another: both leave status --json and
    quantshift_bot_standbys within the presence TTL (1.5 s) and at once; the live primary's
    renewal age stays under a second, its stall meter is exported per instance."""
    started: list[BotProcess] = []
    try:
        primary = BotProcess(redis_url, bot_name, 3.0)
        started.append(primary)
        primary.wait_for("PROMOTED", 15)
        primary_id = primary.wait_for("READY", 15).details[0]
        killed = BotProcess(redis_url, bot_name, 3.0)
        started.append(killed)
        killed_id = killed.wait_for("READY", 15).details[0]
        closed = make_manager(lock_ttl=3.0)
        closed_id = closed.instance_id
        exporter = Exporter(redis_url, bot_name)
        exporters.append(exporter)

        def scrape_until(check: Any, timeout: float) -> Samples:
            give_up = time.monotonic() + timeout
            while True:
                samples, _, _ = exporter.scrape()
                if check(samples) or time.monotonic() > give_up:
                    assert check(samples), samples
                    return samples
                time.sleep(0.02)

        def standbys(samples: Samples) -> float | None:
            return bot_values(samples, "quantshift_bot_standbys").get(bot_name)

        # Both standbys live, and every instance's meter published, the primary's counting.
        samples = scrape_until(
            lambda s: (
                standbys(s) == 2
                and instance_values(s, "quantshift_lease_round_trip_seconds_count").get(
                    (bot_name, primary_id), 0
                )
                > 0
                and len(instance_values(s, "quantshift_lease_tolerance_seconds")) == 3
            ),
            10,
        )
        assert bot_values(samples, "quantshift_bot_lease_renewal_age_seconds")[bot_name] < 1.0
        assert 0 < bot_values(samples, "quantshift_bot_lease_deadline_seconds")[bot_name] <= 0.31
        status = status_json(redis_url, bot_name)["bots"][0]
        assert sorted(status["standbys"]) == sorted([killed_id, closed_id]), status
        assert status["lease_renewal_age_seconds"] < 1.0, status
        assert status["lease_deadline_passed"] is False, status

        start = time.monotonic()
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait_exit(10)
        closed.close()
        closed_at = time.monotonic() - start
        status_gone = None
        while time.monotonic() - start < 10:
            if status_json(redis_url, bot_name)["bots"][0]["standbys"] == []:
                status_gone = time.monotonic() - start
                break
            time.sleep(0.02)
        assert status_gone is not None
        samples = scrape_until(lambda s: standbys(s) == 0, 10)
        metric_gone = time.monotonic() - start
        MEASURED.append(
            f"standbys gone (kill -9 of one, close() of another, close took {closed_at:.3f} s):"
            f" status --json after {status_gone:.3f} s, quantshift_bot_standbys 0 after"
            f" {metric_gone:.3f} s"
        )
        assert status_gone < 2.0 and metric_gone < 2.5, (status_gone, metric_gone)
        status = status_json(redis_url, bot_name)["bots"][0]
        assert status["instances"] == [primary_id], status
        assert list(status["lease_stalls"]) == [primary_id], status
        assert set(instance_values(samples, "quantshift_lease_tolerance_seconds")) == {
            (bot_name, primary_id)
        }
        assert bot_values(samples, "quantshift_bot_has_primary")[bot_name] == 1
        exporter.stop()
    finally:
        kill_all(started)


def test_redis_down_other_paths_and_the_password(exporters: list[Exporter]) -> None:
    password = "hunter2-metrics-secret"
    server = RedisServer(password=password)
    try:
        manager = quantshift_core.StateManager(
            "pw-bot", server.url, lock_ttl=1.5, install_signal_handlers=False
        )
        try:
            assert manager.wait_until_primary(5)
            exporter = Exporter(server.url)
            exporters.append(exporter)
            samples, _, body = exporter.scrape()
            assert samples["quantshift_redis_up"] == {(): 1.0}
            assert bot_values(samples, "quantshift_bot_has_primary") == {"pw-bot": 1.0}
            assert password not in body

            for path in ["/", "/metricsx", "/other/metrics"]:
                status, _, text = exporter.get(path)
                assert status == 404, (path, status, text)
            status, _, _ = exporter.get("/metrics", method="POST")
            assert status == 405
            assert exporter.get("/metrics?name[]=x")[0] == 200

            # A wrong password is an unreachable Redis, and neither password is shown.
            wrong = server.url.replace(password, "wrong-secret-x")
            refused = Exporter(wrong)
            exporters.append(refused)
            samples, _, body = refused.scrape()
            assert samples == {"quantshift_redis_up": {(): 0.0}}, body
        finally:
            manager.close()
        server.stop()
        samples, _, body = exporter.scrape()
        assert samples == {"quantshift_redis_up": {(): 0.0}}, body
        exporter.stop()
        refused.stop()
        assert "redis_up 0" in exporter.stderr, exporter.stderr
        for text in [exporter.stderr, refused.stderr, body]:
            assert password not in text and "wrong-secret-x" not in text, text
    finally:
        server.stop()


def test_an_exporter_starts_while_redis_is_down(exporters: list[Exporter]) -> None:
    with RedisServer() as server:
        url = server.url
    exporter = Exporter(url)
    exporters.append(exporter)
    samples, _, _ = exporter.scrape()
    assert samples == {"quantshift_redis_up": {(): 0.0}}
    exporter.stop()


def test_bad_arguments_are_refused_before_serving() -> None:
    free = ["--listen", "127.0.0.1:0"]  # never the default port, should a check fail
    for args, expected_code, message in [
        (["metrics", "--listen", "nowhere"], 64, "invalid value 'nowhere'"),
        (["metrics", *free, "a:b"], 3, "contains ':'"),
        (["--url", "http://x", "metrics", *free], 3, "redis://"),
    ]:
        url = [] if args[0] == "--url" else ["--url", "redis://127.0.0.1:1/0"]
        done = subprocess.run([*TOOL, *url, *args], capture_output=True, text=True, timeout=15)
        assert done.returncode == expected_code, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)


def metric_names_in(text: str) -> set[str]:
    return set(re.findall(r"\bquantshift_[a-z_]+\b", text))


def test_the_example_rules_and_dashboard_use_real_metrics(
    running_bot: quantshift_core.StateManager,
    redis_url: str,
    bot_name: str,
    exporters: list[Exporter],
) -> None:
    with open(os.path.join(MONITORING, "alerts.yml"), encoding="utf-8") as file:
        rules = yaml.safe_load(file)
    expressions = [
        rule["expr"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule
    ]
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert len(alerts) >= 5, alerts
    with open(os.path.join(MONITORING, "grafana-dashboard.json"), encoding="utf-8") as file:
        dashboard = json.load(file)
    assert dashboard["title"] and dashboard["panels"], dashboard.keys()
    targets = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    referenced = metric_names_in(" ".join(expressions + targets))
    assert referenced, (expressions, targets)

    exporter = Exporter(redis_url, bot_name)
    exporters.append(exporter)
    samples, _, _ = exporter.scrape()
    missing = referenced - set(samples)
    assert not missing, f"the examples use metrics a scrape does not have: {missing}"
    # The dashboard shows every metric the exporter has.
    assert set(samples) <= metric_names_in(" ".join(targets)), set(samples)
    exporter.stop()


def test_the_alert_rules_pass_promtool() -> None:
    promtool = require_tool("promtool", "prometheus")
    for args in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]]:
        done = subprocess.run(
            [promtool, *args], cwd=MONITORING, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
