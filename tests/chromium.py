"""The owner's page in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium): loading it until its charts are drawn, with a screenshot kept in
test-output/screenshots/, and auditing it with axe-core. conftest.py's `browser` fixture starts
the browser; tests/test_page.py and tests/test_loop.py load pages with it."""

from conftest import missing
from tools.servers import REPO

SCREENSHOTS = REPO / "test-output" / "screenshots"
AXE = REPO / "tests" / "js" / "node_modules" / "axe-core" / "axe.min.js"


def start_browser():
    import shutil

    from selenium import webdriver

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        missing("chromium and chromedriver not found; run tools/ensure-browser", "browser tests")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,2200"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    browser.set_page_load_timeout(60)
    return browser


def load(browser, url, screenshot_name):
    """Load the page, wait for its charts; the console's errors, and the screenshot's path."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("browser")  # forget what an earlier page logged
    browser.get(url)
    WebDriverWait(browser, 30).until(
        lambda b: b.execute_script("return document.body.dataset.charts") == "drawn"
    )
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{screenshot_name}.png"
    browser.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return errors, path


def axe_violations(browser):
    """axe-core's audit of the page loaded now (WCAG 2 A and AA, and its best practices):
    {rule: (impact, how many elements)}."""
    if not AXE.exists():
        missing("axe-core not installed; run tools/ensure-node-packages", "page audit")
    browser.execute_script(AXE.read_text())
    results = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then((r) => done(r.violations));"
    )
    return {found["id"]: (found["impact"], len(found["nodes"])) for found in results}


def assert_readable(browser, state):
    found = axe_violations(browser)
    print(f"axe, {state}: {found or 'no violation'}")
    assert {rule: seen for rule, seen in found.items() if seen[0] in ("serious", "critical")} == {}
    for landmarks in ("landmark-one-main", "region"):  # every piece of content is in a landmark
        assert landmarks not in found, found[landmarks]
