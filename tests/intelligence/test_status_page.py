"""The status page in a real headless browser (Debian's chromium, driven by Selenium with Debian's
chromedriver): it shows the devices with their state and line load, the latest values and the
active alarms, refreshes live, and an operator acknowledges an alarm from it."""
from __future__ import annotations

import asyncio
import shutil
import time

import pytest
from harness import wait_until
from room_site import room_config
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage")


@pytest.fixture
def browser():
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        pytest.fail("chromium and chromium-driver are needed: apt-get install chromium chromium-driver "
                    "(provisioning/setup.sh --test)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


ROWS_JS = """return Array.from(document.querySelectorAll('#' + arguments[0] + ' tbody tr'))
  .map(tr => Array.from(tr.cells).map(td => td.textContent));"""


def rows(driver, table: str) -> dict[str, list[str]]:
    """First cell -> texts of the cells, for each row of a table body (read in one step: the page
    re-renders its tables at every refresh)."""
    return {cells[0]: cells for cells in driver.execute_script(ROWS_JS, table) if cells}


def click(driver, css: str) -> bool:
    """Click an element; False if the page re-rendered it under us (the caller retries)."""
    try:
        driver.find_element(By.CSS_SELECTOR, css).click()
    except (StaleElementReferenceException, NoSuchElementException):
        return False
    return True


async def until(check, timeout_s: float = 15.0):
    """Run a blocking browser check in a thread until it returns something true (bounded)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"page did not show it within {timeout_s} s; last: {last!r}")


async def test_status_page_shows_devices_values_alarms_live_and_acknowledges(make_room, browser):
    room = await make_room(room_config(rules=False))
    site = room.site
    assert await wait_until(lambda: site.value("room", "temperature")[1].is_good, 5)
    await asyncio.to_thread(browser.get, f"{room.url}/#token={room.operator}")

    devices = await until(lambda: (r := rows(browser, "devices")) and r.get("room", [""] * 3)[2] == "ONLINE" and r)
    assert devices["fancoil"][2] == "ONLINE" and devices["room"][1] == "net"
    assert devices["room"][5].startswith("tcp://127.0.0.1:")
    assert float(devices["room"][6]) >= 0.0  # line utilisation in percent
    tags = await until(lambda: rows(browser, "tags"))
    assert tags["room.temperature"][1:4] == ["21", "degC", "Good"]  # float32: 7 significant digits, no padding
    assert tags["room.mode"][1] == "auto (0)"
    assert await asyncio.to_thread(lambda: browser.find_element(By.ID, "no-alarms").is_displayed())
    assert "#token" not in await asyncio.to_thread(lambda: browser.current_url)  # token kept out of the URL

    # live: the simulated temperature rises, the page follows without a reload
    site.sim.set_value("room", "temperature", 36.5)
    tags = await until(lambda: (r := rows(browser, "tags")) and r["room.temperature"][1] == "36.5" and r)
    alarms = await until(lambda: rows(browser, "alarms").get("room.temperature.limit"))
    assert alarms[1:5] == ["UNACK", "H", "36.5", "high"]
    updates = int(await asyncio.to_thread(
        lambda: browser.find_element(By.ID, "updated").get_attribute("data-updates")))
    assert updates >= 2

    # acknowledge from the page: the engine and the page both show it
    await until(lambda: click(browser, 'tr[data-alarm="room.temperature.limit"] button.ack'))
    assert await wait_until(lambda: room.intel.alarms.get("room.temperature.limit").state == "ACKED", 10)
    await until(lambda: rows(browser, "alarms").get("room.temperature.limit", [""] * 2)[1] == "ACKED")
    assert room.intel.alarms.get("room.temperature.limit").ack_user == "op"

    # a device goes offline: its state turns OFFLINE on the page and its offline alarm appears
    await site.sim.stop()
    await until(lambda: rows(browser, "devices").get("fancoil", [""] * 3)[2] == "OFFLINE", 20)
    await until(lambda: "fancoil.offline" in rows(browser, "alarms"), 10)


async def test_status_page_without_a_token_asks_for_one(make_room, browser):
    room = await make_room(room_config(rules=False))
    await asyncio.to_thread(browser.get, f"{room.url}/")
    await until(lambda: browser.find_element(By.ID, "login").is_displayed())
    error = await until(lambda: browser.find_element(By.ID, "error").text)
    assert "401" in error and "token" in error
    field = await asyncio.to_thread(browser.find_element, By.ID, "token")
    await asyncio.to_thread(field.send_keys, room.viewer)
    await until(lambda: click(browser, "#login button"))
    devices = await until(lambda: rows(browser, "devices"))
    assert set(devices) == {"room", "fancoil"}
