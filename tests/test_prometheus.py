"""The service as Prometheus reads it: Debian's promtool checks the alert rules and proves them on
series that should and should not fire each alert (tools/prometheus/alerts_test.yml), and a real
Prometheus, configured by tools/prometheus/prometheus.yml as docs/monitoring.md tells an operator,
scrapes a 2-worker gunicorn under traffic: what PromQL finds equals what the service says."""

import shutil
import subprocess
import threading
import time

import pytest
import requests
import yaml

from conftest import missing
from tools import replay_example
from tools.servers import EXAMPLE_OBSERVATION, REPO, free_port, wait_for_200

RULES_DIR = REPO / "tools" / "prometheus"
TOKEN = "scrape-token"


def binary(name):
    found = shutil.which(name)
    if found is None:
        missing(f"{name} not found; run tools/ensure-prometheus", "Prometheus tests")
    return found


def promtool(*arguments, cwd=RULES_DIR, stdin=None):
    """promtool's output, once it has succeeded."""
    run = subprocess.run(
        [binary("promtool"), *arguments], cwd=cwd, input=stdin, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_promtool_accepts_the_alert_rules_and_the_configuration(tmp_path):
    for name in ("alerts.yml", "prometheus.yml"):
        shutil.copy(RULES_DIR / name, tmp_path / name)
    (tmp_path / "monitoring_token").write_text(TOKEN)  # the file the configuration names
    assert "SUCCESS: 10 rules found" in promtool("check", "config", "prometheus.yml", cwd=tmp_path)


def test_each_alert_fires_on_its_series_and_stays_silent_on_the_others():
    promtool("test", "rules", "alerts_test.yml")
    rules = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())["groups"][0]["rules"]
    tested = yaml.safe_load((RULES_DIR / "alerts_test.yml").read_text())["tests"]
    checked = {
        test["alertname"] for group in tested for test in group["alert_rule_test"] if test["exp_alerts"]
    }
    assert checked == {rule["alert"] for rule in rules}  # every alert is proven to fire


class Prometheus:
    """Prometheus with the shipped configuration, its target pointed at a local server."""

    def __init__(self, directory, target):
        config = yaml.safe_load((RULES_DIR / "prometheus.yml").read_text())
        config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
        [job] = config["scrape_configs"]
        job["scheme"] = "http"
        job["static_configs"] = [{"targets": [target]}]
        shutil.copy(RULES_DIR / "alerts.yml", directory / "alerts.yml")
        (directory / "monitoring_token").write_text(TOKEN)
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.base = f"http://127.0.0.1:{free_port()}"
        self.log = (directory / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address={self.base.removeprefix('http://')}",
            ],
            cwd=directory,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        if not wait_for_200(f"{self.base}/-/ready", self.still_running, 60):
            raise RuntimeError(f"Prometheus did not start: {(directory / 'prometheus.log').read_text()}")

    def still_running(self):
        if self.process.poll() is not None:
            raise RuntimeError(f"Prometheus exited with {self.process.returncode}")

    def query(self, promql):
        """The value of a PromQL expression that gives one number (None: no series)."""
        answer = requests.get(f"{self.base}/api/v1/query", params={"query": promql}, timeout=10).json()
        assert answer["status"] == "success", answer
        result = answer["data"]["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def send_traffic(server, passengers):
    """The held-back passengers with their outcomes, 10 refusals and 5 unknown routes, from
    several threads: each request on a new connection, which the kernel spreads over the workers."""
    chunks = [passengers.iloc[i::4] for i in range(4)]
    threads = [threading.Thread(target=replay_example.replay, args=(server, chunk)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _ in range(10):
        assert (
            requests.post(f"{server.base}/predict", json={"id": "x"}, headers=auth(), timeout=30).status_code
            == 400
        )
    for i in range(5):
        assert requests.get(f"{server.base}/no-such-route/{i}", timeout=30).status_code == 404


def auth():
    return {"Authorization": f"Bearer {TOKEN}"}


def wait_until(prometheus, promql, expected, timeout=60):
    """Poll until the expression gives `expected` (scrapes come every second); its last value."""
    deadline = time.monotonic() + timeout
    while (found := prometheus.query(promql)) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def all_once_scraped(prometheus, expected, timeout=60):
    """Each expression's value, polled until all of them are what the service says (a scrape
    every second: one may fall between two requests of the traffic) or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        found = {promql: prometheus.query(promql) for promql in expected}
        if found == pytest.approx(expected) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_a_real_prometheus_reads_what_the_service_says_across_two_workers(live_server, tmp_path):
    binary("prometheus")
    passengers = replay_example.held_back_passengers().head(60)
    env = {"MONITORING_TOKEN": TOKEN, "STATS_MAX_AGE_SECONDS": "0"}  # no answer from before the traffic
    server = live_server(f"sqlite:///{tmp_path}/prom.db", workers=2, env=env)
    server.wait_until_every_worker_listens()
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{server.port}")
    try:
        assert wait_until(prometheus, 'up{job="prediction-service"}', 1.0) == 1.0  # the token was sent
        send_traffic(server, passengers)

        stats = requests.get(f"{server.base}/stats", headers=auth(), timeout=30).json()
        [version] = stats["by_model_version"]
        drift = requests.get(f"{server.base}/drift?hours=24", headers=auth(), timeout=30).json()
        drift = drift["by_model_version"][version]
        expected = {
            'sum(http_requests_total{route="/predict", status="200"})': 60.0,
            'sum(http_requests_total{route="/update", status="200"})': 60.0,
            'sum(http_requests_total{route="/predict", status="400"})': 10.0,
            'sum(http_requests_total{route="unmatched", status="404"})': 5.0,
            'sum(http_request_duration_seconds_count{route="/predict"})': 70.0,
            "sum(predictions_total)": float(stats["overall"]["predictions"]),
            f'predictions_total{{model_version="{version}"}}': float(stats["overall"]["predictions"]),
            "sum(predict_batch_size_sum)": float(stats["overall"]["predictions"]),
            "service_ready": 1.0,
            "model_expected_roc_auc": drift["expected_roc_auc"],
            "model_test_roc_auc": drift["probabilities"]["test_roc_auc"],
            'sum(database_errors_total{kind="unavailable"})': None,  # never counted: no series
        }
        for feature in drift["features"]:
            expected[f'model_feature_psi{{feature="{feature["name"]}"}}'] = feature["psi"]
            expected[f'model_feature_drifted{{feature="{feature["name"]}"}}'] = float(feature["drifted"])
        found = all_once_scraped(prometheus, expected)
        print(
            "\n".join(f"{promql} = {value} (service: {expected[promql]})" for promql, value in found.items())
        )
        assert found == pytest.approx(expected)
        assert stats["overall"]["predictions"] == 60

        rules = requests.get(f"{prometheus.base}/api/v1/rules", timeout=10).json()["data"]["groups"][0][
            "rules"
        ]
        assert len(rules) == 10
        assert {rule["health"] for rule in rules} == {"ok"}, [r for r in rules if r["health"] != "ok"]
    finally:
        prometheus.stop()


def test_promtool_accepts_the_live_metrics(live_server, tmp_path):
    server = live_server(f"sqlite:///{tmp_path}/lint.db", workers=2)
    body = {"id": 1, "observation": EXAMPLE_OBSERVATION}
    assert requests.post(f"{server.base}/predict", json=body, timeout=30).status_code == 200
    promtool("check", "metrics", stdin=requests.get(f"{server.base}/metrics", timeout=30).text)
