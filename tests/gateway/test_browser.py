"""A real browser (Debian chromium, headless, driven by Playwright) against the gateway on a
loopback port: set the key, upload the sample video, wait for Succeeded, open the media page,
search the phrase, click the hit, and check where the player is. Saves a screenshot."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from mediaflow.pipeline import Pipeline
from mediaflow_gateway.backends.embedded import EmbeddedBackend
from mediaflow_gateway.main import create_app
from tests.conftest import REPO, engines_for, free_port, make_settings
from tests.gateway.conftest import API_KEY, gateway_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "test-artifacts"
QUERY = "who cleans the glass of the lighthouse every evening"
PASSAGE = 3

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install -y chromium"),
]


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory, engines_cache):
    """The gateway under uvicorn on a free loopback port, in a thread; stopped at the end."""
    import uvicorn

    core = make_settings(tmp_path_factory.mktemp("gw-browser"), summary=False)
    settings = gateway_settings()
    backend = EmbeddedBackend(settings, Pipeline(core, engines=engines_for(core, engines_cache)), owns_pipeline=True)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, backend), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        pytest.fail("gateway did not start")
    yield url
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield browser
        browser.close()


def test_upload_search_and_seek_in_a_real_browser(gateway_url, browser, sample_video):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The pages run under a self-only Content-Security-Policy: a violation is a console error.
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and "Content Security Policy" in msg.text else None)
    response = page.goto(gateway_url + "/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp

    # the key form stores the key for the API calls
    page.fill("#api-key", API_KEY)
    page.click("#key-form button")
    page.wait_for_load_state("networkidle")

    page.set_input_files("#file", sample_video.media)
    page.fill("#title", "Island field notes")
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#jobs td.phase-Succeeded", timeout=240_000)
    page.click("#jobs a:has-text('Island field notes')")

    page.wait_for_selector("#transcript .seek")
    # functions, not expressions: polling an expression evals it in the page, which the CSP refuses
    page.wait_for_function("() => document.getElementById('player').readyState >= 1")
    page.fill("#search-query", QUERY)
    page.click("#search-form button")
    first_hit = page.wait_for_selector("#hits .seek")
    hit_start = float(first_hit.get_attribute("data-start"))
    first_hit.click()
    page.wait_for_function(
        f"() => Math.abs(document.getElementById('player').currentTime - {hit_start}) < 1", timeout=15_000)
    current = page.evaluate("document.getElementById('player').currentTime")

    spoken = sample_video.passages[PASSAGE]
    assert abs(current - hit_start) < 1.0
    assert abs(current - spoken.start) < 1.0, (current, spoken.start, spoken.end)
    assert page.url.endswith(f"#t={hit_start:.2f}")
    assert "lighthouse" in first_hit.inner_text().lower()
    assert not errors, errors

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "gateway-media-page.png"), full_page=True)
    page.goto(gateway_url + "/")
    page.wait_for_selector("#media li a")
    page.screenshot(path=str(ARTIFACTS / "gateway-library-page.png"), full_page=True)
    page.close()


def _uploaded(gateway_url: str, sample_video, title: str) -> str:
    """The sample's media id, uploading it (and waiting for its job) unless it is already there."""
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with open(sample_video.media, "rb") as fh:
        response = httpx.post(f"{gateway_url}/v1/media", headers=auth, data={"title": title},
                              files={"file": ("island.mp4", fh, "video/mp4")}, timeout=120)
    assert response.status_code in (200, 202), response.text
    events = httpx.get(gateway_url + response.json()["events_url"], headers=auth, timeout=300)
    assert '"phase":"Succeeded"' in events.text.replace(" ", ""), events.text[-500:]
    return response.json()["media_id"]


def test_library_search_deep_links_into_the_sentence(gateway_url, browser, sample_video):
    media_id = _uploaded(gateway_url, sample_video, "Island field notes")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and "Content Security Policy" in msg.text else None)
    page.goto(gateway_url + "/")
    page.fill("#api-key", API_KEY)
    page.click("#key-form button")
    page.wait_for_load_state("networkidle")

    # the search box is found by its label; results are grouped under each media's title
    page.get_by_label("Search every media").fill(QUERY)
    page.click("#library-search-form button")
    group = page.wait_for_selector(f"#library-hits .hit-group[data-media='{media_id}']")
    assert group.query_selector("h3").inner_text() == "Island field notes"
    first = page.wait_for_selector("#library-hits a.seek")
    seek = float(first.get_attribute("data-seek"))
    assert first.get_attribute("href") == f"/media/{media_id}#t={seek:.2f}"
    assert "lighthouse" in first.inner_text().lower()
    assert "from" in first.get_attribute("aria-label")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "gateway-library-search.png"), full_page=True)

    # the link opens the media page with the player at the sentence
    first.click()
    page.wait_for_url(f"**/media/{media_id}#t={seek:.2f}")
    page.wait_for_function(
        f"() => Math.abs(document.getElementById('player').currentTime - {seek}) < 0.5", timeout=15_000)
    spoken = sample_video.passages[PASSAGE]
    assert spoken.start - 1.0 <= seek <= spoken.end, (seek, spoken)
    assert not errors, errors
    page.close()
