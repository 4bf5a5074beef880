"""The owner's page at GET /, loaded by a real headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium) from a live gunicorn, on both backends: on an empty database
and on one filled by replaying held-back passengers with their outcomes. Each load waits for
the charts, compares the figures shown with /stats, fails on any console error, and keeps a
screenshot in test-output/screenshots/."""

import json
import re

import pytest
import requests
from chromium import SCREENSHOTS, assert_readable, load

from service.owner_page import FIGURES
from tools import replay_example

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def figures_shown(browser):
    """{version: {figure: text}} from the page's figures table."""
    shown = {}
    for row in browser.find_elements("css selector", "#figures tbody tr"):
        cells = row.find_elements("css selector", "td[data-figure]")
        shown[row.get_attribute("data-version")] = {
            cell.get_attribute("data-figure"): cell.text for cell in cells
        }
    return shown


def drift_shown(browser):
    """{version: [(feature, PSI text)]} from the page's drift tables, in the order shown."""
    return {
        table.get_attribute("data-version"): [
            (row.get_attribute("data-feature"), row.find_element("css selector", "td[data-psi]").text)
            for row in table.find_elements("css selector", "tbody tr")
        ]
        for table in browser.find_elements("css selector", "table.drift")
    }


def as_shown(value):
    return "—" if value is None else str(value)


def expected_figures(stats):
    versions = {"all": stats["overall"]} | stats["by_model_version"]
    return {
        version: {name: as_shown(found.get(name)) for name in FIGURES} for version, found in versions.items()
    }


BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


@BOTH
def test_the_page_shows_an_empty_database_and_then_the_replayed_passengers(
    database_url, live_server, browser
):
    server = live_server(database_url)
    backend = database_url.split(":")[0]

    errors, _ = load(browser, server.base + "/", f"empty-{backend}")
    assert errors == []
    assert browser.find_element("id", "status").text.startswith("Ready")
    assert figures_shown(browser) == {
        "all": {name: "0" if name in ("predictions", "labelled") else "—" for name in FIGURES}
    }
    assert len(browser.find_elements("css selector", ".chart .empty")) == 6  # "nothing yet" in each
    assert "curl -X POST" in browser.find_element("id", "try-it").text

    replay_example.replay(server, replay_example.held_back_passengers())
    errors, path = load(browser, server.base + "/", f"replayed-{backend}")
    stats = requests.get(f"{server.base}/stats", timeout=30).json()

    drift = requests.get(f"{server.base}/drift", timeout=30).json()["by_model_version"]
    running = requests.get(f"{server.base}/model", timeout=30).json()["model_version"]

    assert errors == []
    assert figures_shown(browser) == expected_figures(stats)
    assert stats["overall"]["labelled"] == 179
    assert drift_shown(browser) == {
        version: [(feature["name"], f"{feature['psi']:.3f}") for feature in found["features"]]
        for version, found in drift.items()
    }
    assert len(browser.find_elements("css selector", ".drift-chart canvas")) == 3  # the worst three
    assert browser.find_element("css selector", "#drift-1 h3").text.startswith(
        drift[running]["features"][0]["name"]
    )
    assert len(browser.find_elements("css selector", ".chart canvas")) == 6 + 3  # every chart drawn
    assert browser.find_elements("css selector", ".chart .empty") == []
    assert "712 training rows" in browser.find_element("id", "profile").text
    assert path.stat().st_size > 10_000
    for part, selector in (("drift-table", "table.drift"), ("expected-auc", "#quality-by-day"),
                           ("drift-bars", "#drift-1")):  # fmt: skip
        browser.find_element("css selector", selector).screenshot(str(SCREENSHOTS / f"{part}-{backend}.png"))


def test_the_try_it_line_from_the_page_is_answered(live_server, tmp_path, browser):
    import shlex
    import subprocess

    server = live_server(f"sqlite:///{tmp_path}/predictions.db")
    load(browser, server.base + "/", "try-it")
    command = shlex.split(browser.find_element("id", "try-it").text)
    answer = subprocess.run(
        [*command, "--silent", "--fail-with-body"], capture_output=True, text=True, timeout=30
    )
    assert answer.returncode == 0, answer.stdout
    assert 0 <= float(answer.stdout.split(":")[1].strip(" }\n")) <= 1


def test_curl_gets_a_json_index_and_a_browser_the_page(live_server, tmp_path):
    server = live_server(f"sqlite:///{tmp_path}/predictions.db")
    index = requests.get(server.base + "/", headers={"Accept": "*/*"}, timeout=30)
    page = requests.get(server.base + "/", headers={"Accept": BROWSER_ACCEPT}, timeout=30)

    assert index.headers["Content-Type"] == "application/json"
    assert "POST /predict" in index.json()["routes"]
    assert index.json()["openapi"] == "/openapi.json"
    assert page.headers["Content-Type"].startswith("text/html")
    for asset in ("/static/vendor/uplot/uPlot.iife.min.js", "/static/page.js", "/static/page.css"):
        assert asset in page.text
        assert requests.get(server.base + asset, timeout=30).status_code == 200
    assert not re.search(r'(src|href)="(https?:)?//', page.text)  # nothing from a CDN: works offline


def test_the_monitoring_token_guards_the_page_and_stats(live_server, tmp_path):
    server = live_server(f"sqlite:///{tmp_path}/predictions.db", env={"MONITORING_TOKEN": "s3cret"})
    for path in ("/", "/stats", "/stats/series", "/drift"):
        refused = requests.get(server.base + path, headers={"Accept": BROWSER_ACCEPT}, timeout=30)
        assert refused.status_code == 401
        assert "MONITORING_TOKEN" in refused.json()["error"]
        assert refused.headers["WWW-Authenticate"].startswith("Basic")  # a browser asks for it
        assert requests.get(server.base + path, auth=("owner", "s3cret"), timeout=30).status_code == 200
        bearer = {"Authorization": "Bearer s3cret"}
        assert requests.get(server.base + path, headers=bearer, timeout=30).status_code == 200
        assert requests.get(server.base + path, auth=("owner", "wrong"), timeout=30).status_code == 401
    assert requests.get(server.base + "/health", timeout=30).status_code == 200  # the rest stays open


def test_the_page_says_why_it_is_not_ready_and_which_libraries_differ(service):
    """The template's other branches, rendered from what the routes hand it."""
    from service.owner_page import context

    card = dict(service.MODEL_CARD)
    card["versions"] = dict(card["versions"], pandas={"running": "3.1.1", "trained_with": "2.2.3"})
    empty = {
        "as_of": "2026-11-27T00:00:00Z",
        "overall": {"predictions": 0, "labelled": 0},
        "by_model_version": {},
    }
    series = {"since": "2026-11-25T00:00:00Z", "as_of": "2026-11-27T00:00:00Z", "by_model_version": {}}
    refusal = "the database is read-only (a replica, or default_transaction_read_only)"
    filling = {"database_bytes": 8e9, "predictions": 10, "bytes_per_prediction": 800, "added_last_week": 7}
    filling |= {"plan_bytes": 10e9, "share_used": 0.8, "days_left": None, "warning": "80% of the plan"}
    drift = {"by_model_version": {}}
    card["challenger"] = {"folder": "challenger", "refused": "it lacks the feature 'Age'"}
    no_auc = dict.fromkeys(("running", "challenger", "difference", "max_error"))
    undefined = {"running": 0.7, "challenger": 0.8, "difference": 0.1, "interval": None, "better": None}
    comparison = {
        "model_version": "old",
        "challenger_version": "new",
        "scored": 1,
        "challenger_failed": 0,
        "pairs": 1,
        "positives": 1,
        "negatives": 0,
        "level": 0.95,
        "verdict": "not distinguishable yet",
        "pairs_to_settle": None,
        "metrics": {"roc_auc": undefined | no_auc,
                    "log_loss": undefined, "brier_score": undefined},
    }  # fmt: skip
    page = context(
        card=card,
        refusal=refusal,
        stats=empty,
        by_hour=series,
        by_day=series,
        drift=drift,
        comparison={"comparisons": [comparison]},
        filling=filling,
        base_url="http://example.test/",
    )
    with service.app.test_request_context("/"):
        html = service.render_template("index.html", **page)

    assert f"Not ready: {refusal}" in html
    assert "pandas 3.1.1 is running; the model was trained with 2.2.3" in html
    assert html.count('class="differs"') == 1
    assert '<p class="status warning" id="storage-warning">80% of the plan</p>' in html
    assert "80.0% of 10 GB" in html
    assert 'id="no-drift"' in html
    assert "challenger/ scores nothing: it lacks the feature &#39;Age&#39;" in html
    assert 'id="no-versions"' in html  # no prediction has a time
    # One labelled pair: no ROC AUC and no interval, shown as a dash rather than a 500.
    assert '<td data-field="running">—</td>' in html
    assert '<td data-field="running">0.7000</td>' in html
    assert '<td data-field="interval">—</td>' in html
    assert "<strong>Not distinguishable yet</strong>" in html


PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}


def scrolls_sideways(browser):
    return browser.execute_script("return document.documentElement.scrollWidth > window.innerWidth")


def test_the_page_passes_axe_in_every_state_and_fits_a_phone(live_server, tmp_path, browser):
    server = live_server(f"sqlite:///{tmp_path}/predictions.db")
    passengers = replay_example.held_back_passengers()

    load(browser, server.base + "/", "axe-fresh")
    assert_readable(browser, "fresh")
    for passenger_id, passenger in passengers.head(20).iterrows():
        observation = json.loads(passenger.drop("Survived").to_json())
        assert server.post("/predict", {"id": int(passenger_id), "observation": observation}).ok
    load(browser, server.base + "/", "axe-predictions-only")
    assert_readable(browser, "predictions only")
    replay_example.replay(server, passengers.iloc[20:60])  # 40 labelled, as an owner's first days
    load(browser, server.base + "/", "axe-labelled")
    assert_readable(browser, "with labels")
    figures = browser.find_elements("css selector", "#quality-by-day details table tbody tr")
    assert figures, "the drawn ROC AUC is also given as a table"

    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    try:
        _, path = load(browser, server.base + "/", "phone-390px")
        assert not scrolls_sideways(browser)
        widest = browser.execute_script(
            "return Math.max(...[...document.querySelectorAll('.chart canvas')]"
            ".map((c) => c.getBoundingClientRect().right))"
        )
        assert widest <= PHONE["width"]
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE | {"height": height})
        browser.save_screenshot(str(path))  # the whole page at a phone's width
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_the_page_with_a_warning_and_the_tokens_set_passes_axe(live_server, tmp_path, browser):
    # A plan of 100 kB is full at once: the page warns that the database is filling.
    env = {"DATABASE_PLAN_GB": "0.0001", "MONITORING_TOKEN": "s3cret", "WRITE_TOKEN": "w"}
    server = live_server(f"sqlite:///{tmp_path}/predictions.db", env=env)
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": "Bearer s3cret"}})
    try:
        load(browser, server.base + "/", "axe-warning-tokens")
        assert "of the plan" in browser.find_element("id", "storage-warning").text
        assert_readable(browser, "with a warning and the tokens set")
    finally:
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})
