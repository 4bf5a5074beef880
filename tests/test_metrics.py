"""GET /metrics from a live gunicorn with two workers: after known traffic, whichever worker
answers the scrape, the counts are the sums over both workers, and they survive a worker's death."""

import os
import signal
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tools.servers import EXAMPLE_OBSERVATION, LiveServer

pytestmark = pytest.mark.slow  # each test starts gunicorn with its workers


def scrape(server):
    answer = requests.get(f"{server.base}/metrics", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def worker_pids(server):
    pid = server.process.pid
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def send_known_traffic(server):
    """40 predictions, 10 refused, 5 unknown routes, 3 /stats: each on a new connection, which
    the kernel spreads over both workers."""
    for i in range(40):
        body = {"id": i, "observation": EXAMPLE_OBSERVATION}
        assert requests.post(f"{server.base}/predict", json=body, timeout=30).status_code == 200
    for _ in range(10):
        assert requests.post(f"{server.base}/predict", json={"id": "x"}, timeout=30).status_code == 400
    for i in range(5):
        assert requests.get(f"{server.base}/no-such-route/{i}", timeout=30).status_code == 404
    for _ in range(3):
        assert requests.get(f"{server.base}/stats", timeout=30).status_code == 200


def assert_counts_add_up(samples, model_version):
    assert value(samples, "http_requests_total", route="/predict", method="POST", status="200") == 40
    assert value(samples, "http_requests_total", route="/predict", method="POST", status="400") == 10
    assert (
        value(samples, "http_requests_total", route="unmatched", method="GET", status="404") == 5
    )  # one label
    assert value(samples, "http_requests_total", route="/stats", method="GET", status="200") == 3
    assert value(samples, "http_request_duration_seconds_count", route="/predict") == 50
    assert value(samples, "predictions_total", model_version=model_version) == 40
    assert value(samples, "predict_batch_size_sum") == 40  # refused requests never reach a batch
    assert value(samples, "database_errors_total", kind="unavailable") == 0


def assert_drift_gauges(samples, drift):
    """The running version's last 24 hours, as GET /drift?hours=24 answers."""
    assert drift["features"]
    for feature in drift["features"]:
        assert value(samples, "model_feature_psi", feature=feature["name"]) == pytest.approx(feature["psi"])
    assert value(samples, "model_expected_roc_auc") == pytest.approx(drift["expected_roc_auc"])


def test_metrics_add_up_over_the_workers_and_outlive_a_worker(tmp_path):
    directory = tmp_path / "metrics"  # as an operator may set it; a file from an earlier run is wiped
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"left by an earlier run")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    with LiveServer(f"sqlite:///{tmp_path}/metrics.db", workers=2, env=env) as server:
        server.wait_until_every_worker_listens()
        model_version = requests.get(f"{server.base}/ready", timeout=30).json()["model_version"]
        send_known_traffic(server)

        workers = worker_pids(server)
        written = {path.name for path in directory.iterdir()}
        assert "counter_1.db" not in written
        assert all(any(name.endswith(f"_{pid}.db") for name in written) for pid in workers), written
        for _ in range(6):  # each scrape answered by either worker
            samples = scrape(server)
            assert_counts_add_up(samples, model_version)
            assert value(samples, "service_ready") == 1
        drift = requests.get(f"{server.base}/drift?hours=24", timeout=30).json()["by_model_version"]
        assert_drift_gauges(scrape(server), drift[model_version])

        os.kill(workers[0], signal.SIGKILL)  # gunicorn starts another; the dead one's counts stay
        deadline = time.monotonic() + 30
        while len(set(worker_pids(server)) - {workers[0]}) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert_counts_add_up(scrape(server), model_version)


def test_without_a_directory_set_the_master_makes_one_and_removes_it(tmp_path):
    temp = tmp_path / "temp"  # where the master makes its temporary directory (and nobody else)
    temp.mkdir()
    with LiveServer(f"sqlite:///{tmp_path}/metrics.db", workers=2, env={"TMPDIR": str(temp)}) as server:
        assert requests.post(
            f"{server.base}/predict", json={"id": 1, "observation": EXAMPLE_OBSERVATION}, timeout=30
        ).ok
        [made] = temp.glob("service-metrics-*")
        model_version = requests.get(f"{server.base}/ready", timeout=30).json()["model_version"]
        assert value(scrape(server), "predictions_total", model_version=model_version) == 1
    assert not made.exists()


def test_the_monitoring_token_guards_metrics(tmp_path):
    with LiveServer(
        f"sqlite:///{tmp_path}/metrics.db", workers=1, env={"MONITORING_TOKEN": "s3cret"}
    ) as server:
        assert requests.get(f"{server.base}/metrics", timeout=30).status_code == 401
        answer = requests.get(
            f"{server.base}/metrics", headers={"Authorization": "Bearer s3cret"}, timeout=30
        )
        assert answer.status_code == 200
        assert "http_requests_total" in answer.text
