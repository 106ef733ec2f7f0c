"""The inspection page at `/`, driven in a real headless Chromium against a real `anomaly serve` on 127.0.0.1."""

from __future__ import annotations

import shutil

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from anomaly.errors import AnomalyError
from benchmarks.page_screenshot import chromium_driver, page_cards
from serving.process import free_port, running_server, serve_command
from tests.conftest import page_in_chromium

pytestmark = pytest.mark.slow  # real servers, browsers or trained pipelines: `-m "not slow"` skips them

API_KEY = "page-key-ü"  # outside ASCII: browsers send it in Latin-1


@pytest.fixture(scope="module")
def page(published_model, tmp_path_factory):
    """(driver on the page, base URL) with the API key on."""
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "serve.log"
    with running_server(
        serve_command(str(published_model.directory), port), {"ANOMALY_API_KEY": API_KEY}, port, log
    ) as url:
        with page_in_chromium(url) as driver:
            yield driver, url


def set_rate(driver: webdriver.Chrome, rate: float) -> str:
    """Move the false-positive-rate slider (log scale) as a user would, and return the flagged count shown."""
    driver.execute_script(
        "const s = document.getElementById('fpr'); s.value = Math.log10(arguments[0]); s.dispatchEvent(new "
        "Event('input', {bubbles: true}));",
        rate,
    )
    return driver.find_element(By.ID, "flagged").text


def test_the_page_scores_uploads_decides_like_the_api_and_redecides_at_another_rate(page, published_model, tmp_path):
    driver, url = page
    wait = WebDriverWait(driver, 60)
    wait.until(expected_conditions.visibility_of_element_located((By.ID, "api-key"))).send_keys(API_KEY)
    driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    wait.until(expected_conditions.visibility_of_element_located((By.ID, "scoring")))
    assert "name" in driver.find_element(By.ID, "model-facts").text

    data = published_model.data
    uploads = []
    for source in [
        *sorted((data / "test" / "good").glob("*.png"))[:2],
        sorted((data / "test" / "scratch").glob("*.png"))[0],
    ]:
        uploads.append(
            tmp_path / f"{source.parent.name}-{source.name}"
        )  # good-000.png, scratch-000.png: distinct names
        shutil.copyfile(source, uploads[-1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(uploads[0].read_bytes()[:100])
    driver.find_element(By.ID, "files").send_keys("\n".join(str(path) for path in [*uploads, broken]))
    wait.until(lambda d: len(page_cards(d)) == 4 and "scoring…" not in page_cards(d).values())

    # Beside the target, the share the service flagged among the images it scored (the page refreshes it after a batch).
    wait.until(lambda d: "of the last 3 images" in d.find_element(By.ID, "monitoring").text)
    assert "target 1.0% (too few to test)" in driver.find_element(By.ID, "monitoring").text
    facts = driver.find_element(By.ID, "model-facts").text
    assert "promise" in facts and "normal images (whole runs of consecutive training normals" in facts

    api = {
        path.name: httpx.post(
            f"{url}/score", files={"image": path.read_bytes()}, headers={"Authorization": f"Bearer {API_KEY}".encode()}
        ).json()
        for path in uploads
    }
    shown = page_cards(driver)
    assert {name: shown[name] for name in api} == {
        name: "anomaly" if result["is_anomaly"] else "normal" for name, result in api.items()
    }
    assert "not a readable image" in shown["broken.png"] or "truncated" in shown["broken.png"]

    pvalues = sorted(result["p_combined"] for result in api.values())
    inside = [p for p in pvalues if 1e-4 * 1.1 < p < 0.5 / 1.1]  # a p-value the slider (1e-4 to 0.5) can move across
    assert inside, pvalues
    for rate in (inside[-1] * 1.1, inside[-1] / 1.1):
        expected = sum(p < rate for p in pvalues)
        assert set_rate(driver, rate) == f"{expected} of 3 flagged"
        assert sum(text == "anomaly" for text in page_cards(driver).values()) == expected
    driver.save_screenshot(str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_the_page_is_open_and_its_requests_never_get_5xx(page):
    _, url = page
    response = httpx.get(f"{url}/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "<title>anomaly: inspect images</title>" in response.text
    odd = httpx.post(
        f"{url}/score",
        params={"heatmap": "true", "heatmap_size": "sideways"},
        files={"image": b"x"},
        headers={"Authorization": f"Bearer {API_KEY}".encode()},
    )
    assert odd.status_code == 422 and "heatmap_size" in odd.json()["error"]


def test_without_chromium_the_page_test_says_what_to_install(monkeypatch):
    monkeypatch.setattr("benchmarks.page_screenshot.shutil.which", lambda name: None)
    with pytest.raises(AnomalyError, match="sudo apt-get install chromium chromium-driver"):
        chromium_driver()
