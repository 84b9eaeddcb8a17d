"""sei app in a real browser: headless Chromium (Debian's chromium + chromium-driver) through Selenium.

Skipped, with the reason, where no Chromium or driver is installed (scripts/install_browser.sh installs
them; scripts/test.sh runs it). ``SEI_APP_SCREENSHOT=path.png`` saves the result page (docs/figures/app.png).
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sei.cli

pytestmark = pytest.mark.browser
WAIT = 240  # seconds: the CI machine has 2 cores, shared


def _find_browser() -> tuple[str, str] | None:
    browser = next(
        (path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))),
        None,
    )
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def driver():
    pytest.importorskip("selenium", reason="the browser tests need selenium (requirements.lock)")
    found = _find_browser()
    if found is None:
        pytest.skip(
            "no headless browser: install Debian's chromium and chromium-driver (bash "
            "scripts/install_browser.sh)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault(
        "SE_OFFLINE", "true"
    )  # Selenium Manager must not try to download a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-proxy-server",
        "--window-size=1100,1500",
    ):
        options.add_argument(argument)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=found[1]))
    browser.set_page_load_timeout(60)
    yield browser
    browser.quit()


def _open(driver, app_server):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(app_server.url + "/")
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))


def _wait_state(driver, states: tuple[str, ...], timeout: float = WAIT) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.find_element(By.ID, "state").text in states)
    return driver.find_element(By.ID, "state").text


@pytest.mark.slow
def test_page_runs_a_shipped_model_and_returns_what_sei_reconstruct_writes(
    driver, app_server, blurry_png, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    _open(driver, app_server)
    driver.find_element(By.ID, "images").send_keys(blurry_png)
    driver.find_element(By.CSS_SELECTOR, "details summary").click()
    driver.find_element(By.ID, "truth").send_keys(
        str(Path(blurry_png).with_name("coffee.png"))
    )  # the sharp original
    driver.find_element(By.ID, "mode-model").click()
    Select(driver.find_element(By.ID, "weights")).select_by_value("sei-gaussian_r2-noise5")
    driver.find_element(By.ID, "run").click()
    assert _wait_state(driver, ("done", "failed", "cancelled")) == "done", driver.find_element(
        By.ID, "job-error"
    ).text
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script(
            "const i = document.querySelectorAll('#results img'); return i.length === 2 && [...i].every(x "
            "=> x.complete && x.naturalWidth > 0)"
        )
    )
    article = driver.find_element(By.CSS_SELECTOR, "#results .result")
    assert article.get_attribute("data-name") == "coffee_blurry.png"
    psnr = article.find_element(By.CSS_SELECTOR, ".psnr").text
    assert psnr.startswith("PSNR ") and "(input " in psnr
    gained = float(psnr.split()[1]) - float(psnr.split("(input ")[1].split()[0])
    assert gained > 1  # the shipped model deblurs the bundled photograph

    # the before/after slider moves the boundary, the zoom enlarges the comparison
    slider, zoom = (
        article.find_element(By.CSS_SELECTOR, ".slider"),
        article.find_element(By.CSS_SELECTOR, ".zoom"),
    )
    driver.execute_script("arguments[0].value = 30; arguments[0].dispatchEvent(new Event('input'))", slider)
    assert "30%" in article.find_element(By.CSS_SELECTOR, "img.after").value_of_css_property("clip-path")
    width = article.find_element(By.CSS_SELECTOR, ".compare").size["width"]
    driver.execute_script("arguments[0].value = 2; arguments[0].dispatchEvent(new Event('input'))", zoom)
    assert article.find_element(By.CSS_SELECTOR, ".compare").size["width"] == pytest.approx(
        2 * width, rel=0.02
    )
    driver.execute_script("arguments[0].value = 1; arguments[0].dispatchEvent(new Event('input'))", zoom)
    driver.execute_script("arguments[0].value = 50; arguments[0].dispatchEvent(new Event('input'))", slider)
    if os.environ.get("SEI_APP_SCREENSHOT"):
        driver.set_window_size(1100, 1700)
        driver.save_screenshot(os.environ["SEI_APP_SCREENSHOT"])
        driver.set_window_size(1100, 1500)

    # the page's download link serves the same pixels as `sei reconstruct`
    href = article.find_element(By.CSS_SELECTOR, "a.download").get_attribute("href")
    status, content, _ = app_server.request(href.removeprefix(app_server.url))
    assert status == 200
    assert (
        sei.cli.main(
            ["reconstruct", blurry_png, str(tmp_path / "cli.png"), "--weights", "sei-gaussian_r2-noise5"]
        )
        == 0
    )
    expected = np.asarray(Image.open(tmp_path / "cli.png")).astype(int)
    with Image.open(io.BytesIO(content)) as image:
        got = np.asarray(image).astype(int)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1


def test_page_shows_the_error_for_a_non_image(driver, app_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    notes = tmp_path / "notes.txt"
    notes.write_text("these are notes, not pixels\n")
    _open(driver, app_server)
    driver.find_element(By.ID, "images").send_keys(str(notes))
    driver.find_element(By.ID, "run").click()
    error = driver.find_element(By.ID, "error")
    WebDriverWait(driver, 30).until(lambda d: error.is_displayed() and error.text)
    assert "notes.txt is not an image" in error.text
    assert not driver.find_element(By.ID, "job").is_displayed()  # no job was started


def test_dropped_files_are_the_ones_sent(driver, app_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _open(driver, app_server)
    driver.execute_script("""
        const transfer = new DataTransfer();
        transfer.items.add(new File(["plain text"], "dropped notes.txt", {type: "text/plain"}));
        transfer.items.add(new File(["more"], "second.txt", {type: "text/plain"}));
        const event = new DragEvent("drop", {dataTransfer: transfer, bubbles: true});
        document.getElementById("drop").dispatchEvent(event);
    """)
    assert driver.find_element(By.ID, "file-list").text == "2 chosen: dropped notes.txt, second.txt"
    driver.find_element(By.ID, "run").click()
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "error").text)
    assert "dropped notes.txt is not an image" in driver.find_element(By.ID, "error").text


@pytest.mark.slow
def test_page_cancels_a_training_job(driver, app_server, blurry_png):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    _open(driver, app_server)
    driver.find_element(By.ID, "images").send_keys(blurry_png)
    driver.find_element(By.ID, "mode-train").click()
    Select(driver.find_element(By.ID, "kernel_family")).select_by_value("gaussian")
    size = driver.find_element(By.ID, "kernel_size")
    size.clear()
    size.send_keys("2.5")
    limit = driver.find_element(By.ID, "time_limit")
    limit.clear()
    limit.send_keys("90s")
    driver.find_element(By.ID, "run").click()
    WebDriverWait(driver, WAIT).until(lambda d: "step " in d.find_element(By.ID, "progress-text").text)
    driver.refresh()  # a closed or reloaded tab: the job goes on, and the page finds it again
    WebDriverWait(driver, 60).until(lambda d: "step " in d.find_element(By.ID, "progress-text").text)
    text = driver.find_element(By.ID, "progress-text").text
    assert "loss" in text and "left" in text
    driver.find_element(By.ID, "cancel").click()
    assert _wait_state(driver, ("done", "failed", "cancelled"), 60) == "cancelled"
    assert not driver.find_element(By.ID, "cancel").is_displayed()
    assert not driver.find_element(By.ID, "results-section").is_displayed()
    job_id = driver.execute_script("return location.hash").split("=")[1]
    assert app_server.job(job_id)["state"] == "cancelled"
