"""docs/performance.md's commands, shortened: the benchmark's tables come out whole and every 200
it counted is a row in the database."""

import re
import subprocess

import pytest

from tools.servers import REPO

pytestmark = pytest.mark.slow


def make(*args, timeout=600):
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_make_bench_prints_the_table_and_finds_every_200_in_the_database():
    """docs/performance.md's `make bench`, shortened to one 1-second run per figure, at the two
    connection counts its targets name."""
    result = make(
        "bench",
        "BENCH_ARGS=--seconds 1 --repeat 1 --connections 1 16 --starts 1 --sizes 1000 --postgresql-sizes "
        "--flood-rows 1000 --calls 1 --modes after_a_label "
        "--flood-seconds 1 --release-rows 2000 --storage-rows 2000",
    )
    table = re.findall(
        r"^\| (?:sqlite|postgresql) \| (?:baseline|service|scikit-learn|challenger|health) \| \d+ \| [\d,]+ "
        r"\| [\d.]+ \| [\d.]+ \| [\d.]+ \|",  # req/s, p50, p99, CPU ms per request
        result.stdout,
        flags=re.M,
    )
    assert len(table) == 20, result.stdout + result.stderr  # 2 connection counts, 5 kinds, 2 backends
    assert re.search(
        r"^(met   |MISSED) SQLite, 16 connections: /predict at least 60% of /health",
        result.stdout,
        flags=re.M,
    )
    assert "met    every server: every 200 is a row in the database" in result.stdout
    assert "met    the service: zero errors" in result.stdout
    assert re.search(
        r"^postgresql: [\d.]+ s from starting gunicorn to the first 200", result.stdout, flags=re.M
    )
    assert re.search(r"^\| postgresql \| 1,000 \| [\d.]+ \|", result.stdout, flags=re.M)  # /stats timings
    assert re.search(r"^\| sqlite \| 1,000 \| [\d.]+ \| [\d.]+ \| [\d.]+x \| 0 \|", result.stdout, flags=re.M)
    assert "- the release command took" in result.stdout
    assert re.search(r"^- the release command took [\d.]+ s: .*schema version \d+", result.stdout, flags=re.M)
    assert re.search(r"^\| postgresql \| [\d,]+ \| [\d,]+ \|$", result.stdout, flags=re.M)  # bytes per row


def test_make_bench_reload_prints_the_reload_table():
    """docs/performance.md's `make bench-reload`, shortened to one reload of one run per setting."""
    result = make("bench-reload", "BENCH_ARGS=--repeat 1 --reloads 1 --clients 2")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| reuse_port")]
    assert len(rows) >= 2, result.stdout
    assert rows[1].startswith("| reuse_port off (GUNICORN_REUSE_PORT=0) | 0.0 |"), rows


def test_make_bench_soak_samples_each_worker_and_reports_growth():
    """docs/performance.md's `make bench-soak`, shortened to three samples of 3 seconds."""
    result = make("bench-soak", "BENCH_ARGS=--minutes 0.15 --sample-seconds 3 --rate 40")
    assert result.returncode == 0, result.stdout + result.stderr
    samples = re.findall(
        r"^ +[\d.]+ +\d+ +0 +[\d.]+ +[\d.]+ +([\d.]+) MB (\d+) fds (\d+) db", result.stdout, re.M
    )
    assert len(samples) == 3, result.stdout
    assert all(float(rss) > 50 and int(fds) > 0 and int(db) > 0 for rss, fds, db in samples)
    assert "growth from minute 0.15 to minute 0.15:" in result.stdout
    assert re.search(r"^  worker 2 rss_mb: [+-][\d.]+$", result.stdout, re.M), result.stdout
