"""A screenshot of the inspection page scoring real images, for the README:

    uv run python -m benchmarks.page_screenshot MODEL_DIR OUTPUT.jpg IMAGE [IMAGE ...]

It starts `anomaly serve` on 127.0.0.1, opens the page in headless Chromium (Debian's `chromium` and `chromedriver`;
nothing is downloaded), drops the images in and saves the page once every image has its decision.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from anomaly.errors import AnomalyError
from serving.process import free_port, running_server, serve_command

INSTALL = "the page is driven in Debian's Chromium: sudo apt-get install chromium chromium-driver"


def chromium_driver(width: int = 1280, height: int = 800) -> webdriver.Chrome:
    """Headless Chromium from the system's packages; Selenium never downloads a browser or a driver."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        raise AnomalyError(f"{INSTALL} (chromium: {browser}, chromedriver: {driver})")
    os.environ["SE_OFFLINE"] = "true"
    options = Options()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


def page_cards(driver: webdriver.Chrome) -> dict[str, str]:
    """Each shown image's name -> its badge (or error) text, read in one script (the gallery redraws as results
    come)."""
    return dict(
        driver.execute_script(
            "return [...document.querySelectorAll('#gallery .card')].map(card => [card.dataset.name, "
            "(card.querySelector('.badge, .error') || {textContent: ''}).textContent]);"
        )
    )


def screenshot(model: Path, images: list[Path], output: Path) -> None:
    port = free_port()
    with (
        tempfile.TemporaryDirectory() as scratch,
        running_server(serve_command(str(model), port), {}, port, Path(scratch) / "serve.log") as url,
    ):
        driver = chromium_driver(1280, 1750)
        try:
            driver.get(f"{url}/")
            WebDriverWait(driver, 60).until(expected_conditions.visibility_of_element_located((By.ID, "scoring")))
            driver.find_element(By.ID, "files").send_keys("\n".join(str(path.resolve()) for path in images))
            WebDriverWait(driver, 300).until(
                lambda d: len(page_cards(d)) == len(images) and "scoring…" not in page_cards(d).values()
            )
            output.parent.mkdir(parents=True, exist_ok=True)
            Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB").save(
                output, quality=85
            )  # .jpg keeps the README light
        finally:
            driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("images", type=Path, nargs="+")
    arguments = parser.parse_args()
    screenshot(arguments.model, arguments.images, arguments.output)
    print(f"written {arguments.output}")


if __name__ == "__main__":
    main()
