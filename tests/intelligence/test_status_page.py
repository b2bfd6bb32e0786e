"""The status page in a real headless browser (Debian's chromium, driven by Selenium with Debian's
chromedriver), offline: every host but the appliance's loopback address fails to resolve, and the
page must load nothing from anywhere else. It groups devices by line, shows each device's key
values with sparklines, a device detail view, a trend of a tag with 10,000 stored samples drawn
from at most N points (the history API's M4), values at their resolution, an alarm banner on every
view; updates are pushed (server-sent events), an operator acknowledges an alarm from the page.

Screenshots (tablet size, 1024 x 768 and 768 x 1024) go to ``$EDGE_SCREENSHOTS`` (default: the
test's temporary directory)."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from harness import wait_until
from room_site import room_config
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from edge.core.model import SampleBatch

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
         # offline: no name resolves (a CDN would fail), loopback addresses are reached directly
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
TABLET = (1024, 768)
TRENDED = 10_000


@pytest.fixture
def browser():
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        pytest.fail("chromium and chromium-driver are needed: apt-get install chromium chromium-driver "
                    "(provisioning/setup.sh --test)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={TABLET[0]},{TABLET[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shots(tmp_path) -> Path:
    out = Path(os.environ.get("EDGE_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


ROWS_JS = """return Array.from(document.querySelectorAll(arguments[0]))
  .map(tr => Array.from(tr.cells).map(td => td.textContent));"""


def rows(driver, css: str) -> dict[str, list[str]]:
    """First cell -> texts of the cells, for the rows matched by ``css`` (read in one step)."""
    return {cells[0]: cells for cells in js(driver, ROWS_JS, css) if cells}


CARDS_JS = """return Array.from(document.querySelectorAll('section.line')).map(sec => [sec.dataset.line,
  Array.from(sec.querySelectorAll('article.device')).map(a => [a.dataset.device, a.querySelector('.state').textContent,
    Array.from(a.querySelectorAll('tr[data-tag]')).map(tr => [tr.dataset.tag,
      [tr.querySelector('.value').textContent, Number(tr.querySelector('svg.spark').dataset.points || 0),
       tr.querySelector('svg.spark polyline').getAttribute('points') || '']])])]);"""


def cards(driver) -> dict[str, dict[str, tuple[str, dict]]]:
    """line -> device -> (state, {tag: [value text, sparkline points, polyline]})."""
    return {line: {d: (state, dict(tags)) for d, state, tags in devices} for line, devices in js(driver, CARDS_JS)}


def requested(driver) -> list[str]:
    """Every URL the page asked for since the last call (Chromium's network log)."""
    out = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            out.append(message["params"]["request"]["url"])
    return out


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


def with_scaled_point(text: str) -> str:
    """The room site plus a humidity point in tenths (scale 0.1: 202 raw is 20.2, a double 20.200000000000003)."""
    anchor = "      - {name: mode, address: 2"
    point = "      - {name: humidity, address: 3, type: int16, scale: 0.1, unit: '%RH', sim: {kind: constant, value: 20.2}}\n"
    assert anchor in text
    return text.replace(anchor, point + anchor)


def store_trend_samples(site, key: str) -> None:
    """TRENDED old polls of one tag in the spool, over the last hour but before the appliance started."""
    tag = site.app.plant.tag_by_key()[key]
    now = time.time_ns()
    ts = now - 3500 * 10**9 + np.arange(TRENDED, dtype=np.int64) * (3300 * 10**9 // TRENDED)
    values = 21 + 4 * np.sin(np.arange(TRENDED) / 600) + np.random.default_rng(1).normal(0, 0.2, TRENDED)
    ids = np.array([tag.id], dtype=np.int32)
    for t, v in zip(ts.tolist(), values.tolist(), strict=True):
        assert site.app.outputs.spool.append_samples(SampleBatch(tag.device, t, ids, np.array([v]),
                                                                 np.zeros(1, np.uint8)))
    assert site.app.outputs.spool.flush()


async def test_status_page_offline_grouped_with_trends_pushed_live_and_acknowledges(make_room, browser, shots):
    room = await make_room(with_scaled_point(room_config(rules=False)))
    site = room.site
    assert await wait_until(lambda: site.value("room", "temperature")[1].is_good, 5)
    await asyncio.to_thread(store_trend_samples, site, "room.temperature")
    await asyncio.to_thread(browser.get, f"{room.url}/#token={room.operator}")

    # overview: one section per line (each device has its own TCP endpoint here), a card per device
    groups = await until(lambda: (c := cards(browser)) and len(c) == 2 and all(
        s == "ONLINE" for devs in c.values() for s, _ in devs.values()) and c)
    lines = {dev: line for line, devs in groups.items() for dev in devs}
    assert set(lines) == {"room", "fancoil"} and lines["room"] != lines["fancoil"]
    assert all(line.startswith("tcp://127.0.0.1:") for line in lines.values())
    room_card = groups[lines["room"]]["room"][1]
    assert set(room_card) == {"room.temperature", "room.humidity", "room.mode"}  # the non-writable ones ...
    assert list(room_card)[-1] == "room.mode"  # ... measurements with a unit first
    assert room_card["room.humidity"][0] == "20.2"  # its resolution: one decimal, no binary noise
    assert room_card["room.mode"][0] == "auto (0)"
    # a sparkline per tag: its history from the API (M4) and the pushed values since
    spark = await until(lambda: (c := cards(browser)[lines["room"]]["room"][1]["room.temperature"]) and c[1] >= 20 and c)
    assert len(spark[2].split()) == spark[1]
    assert "#token" not in await asyncio.to_thread(lambda: browser.current_url)  # token kept out of the URL
    await asyncio.to_thread(browser.save_screenshot, str(shots / "overview-1024x768.png"))

    # pushed, not polled: one event stream, no /api/status requests, the update count grows
    updates = int(await asyncio.to_thread(lambda: browser.find_element(By.ID, "updated").get_attribute("data-updates")))
    await until(lambda: int(browser.find_element(By.ID, "updated").get_attribute("data-updates")) >= updates + 2)
    requests = await asyncio.to_thread(requested, browser)
    assert [r for r in requests if r.endswith("/api/status/stream")] and not [r for r in requests if r.endswith("/api/status")]
    assert any("/history?" in r and "max_points=120" in r for r in requests)  # the sparklines' M4 history
    assert browser.find_element(By.ID, "updated").get_attribute("data-transport") == "sse"
    origin = room.url.rstrip("/")
    assert all(r.startswith(origin + "/") for r in requests), requests  # offline: nothing from elsewhere
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe

    # live: the simulated temperature rises; the value, the banner and the alarm follow without a reload
    assert await asyncio.to_thread(lambda: browser.find_element(By.ID, "banner").get_attribute("class")) == "banner ok"
    site.sim.set_value("room", "temperature", 36.5)
    await until(lambda: cards(browser)[lines["room"]]["room"][1]["room.temperature"][0] == "36.5")
    await until(lambda: "unack" in browser.find_element(By.ID, "banner").get_attribute("class"))
    assert "1 alarm" in browser.find_element(By.ID, "banner-text").text

    # the device detail view: diagnostics and every tag with quality, time and sparkline
    await asyncio.to_thread(click, browser, 'article[data-device="room"] h3 a')
    detail = await until(lambda: (r := rows(browser, "#tags tbody tr")) and len(r) == 3 and r)
    assert detail["temperature"][1:4] == ["36.5", "degC", "Good"] and detail["humidity"][1] == "20.2"
    assert "unack" in browser.find_element(By.ID, "banner").get_attribute("class")  # the banner is on every view
    diag = await asyncio.to_thread(js, browser, "return Object.fromEntries(Array.from("
                                   "document.querySelectorAll('#device-diag dd')).map(d => [d.dataset.diag, d.textContent]))")
    assert diag["bus"] == "net" and diag["line"] == lines["room"]

    def last_error_shown() -> bool:  # the device's own last error, or a dash: a healthy run has none, but a
        known = next(d.last_error for d in site.app.diagnostics() if d.name == "room")  # starved CI run may time out
        return js(browser, "return document.querySelector('#device-diag dd[data-diag=\"last error\"]').textContent"
                  ) == (known or "—")
    await until(last_error_shown)
    await asyncio.to_thread(browser.save_screenshot, str(shots / "device-room-1024x768.png"))

    # the trend of a tag with 10,000 stored samples: drawn from at most N points of the history API
    await asyncio.to_thread(click, browser, '#tags tr[data-tag="room.temperature"] a')
    info = await until(lambda: (e := browser.find_element(By.ID, "trend-info")) and int(e.get_attribute("data-raw")) > 0 and e)
    raw, points, max_points = (int(info.get_attribute(a)) for a in ("data-raw", "data-points", "data-max-points"))
    assert raw >= TRENDED and 0 < points <= max_points < TRENDED, (raw, points, max_points)
    drawn = await asyncio.to_thread(js, browser, "return Array.from(document.querySelectorAll("
                                    "'#trend-chart polyline.series')).reduce((n, p) => n + Number(p.dataset.points), 0)")
    assert points <= drawn <= max_points + 50  # the fetched points plus the values pushed since
    assert "unack" in browser.find_element(By.ID, "banner").get_attribute("class")
    await asyncio.to_thread(browser.save_screenshot, str(shots / "trend-room-temperature-1024x768.png"))

    # acknowledge from the banner's alarm list: the engine and the page both show it
    await asyncio.to_thread(click, browser, "#banner-toggle")
    await until(lambda: click(browser, 'tr[data-alarm="room.temperature.limit"] button.ack'))
    assert await wait_until(lambda: room.intel.alarms.get("room.temperature.limit").state == "ACKED", 10)
    await until(lambda: rows(browser, "#alarms tbody tr").get("room.temperature.limit", [""] * 2)[1] == "ACKED")
    assert room.intel.alarms.get("room.temperature.limit").ack_user == "op"
    await until(lambda: "acked" in browser.find_element(By.ID, "banner").get_attribute("class"))
    await asyncio.to_thread(browser.save_screenshot, str(shots / "trend-with-alarms-1024x768.png"))

    # portrait tablet: the overview still fits (cards stack, no horizontal scrolling)
    await asyncio.to_thread(browser.set_window_size, 768, 1024)
    await asyncio.to_thread(click, browser, "#home")
    await until(lambda: cards(browser))
    width = await asyncio.to_thread(js, browser, "return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], width
    await asyncio.to_thread(browser.save_screenshot, str(shots / "overview-768x1024.png"))

    # a device goes offline: its card says so and its offline alarm appears
    await site.sim.stop()
    await until(lambda: cards(browser)[lines["fancoil"]]["fancoil"][0] == "OFFLINE", 20)
    await until(lambda: "fancoil.offline" in rows(browser, "#alarms tbody tr"), 10)


async def test_status_page_without_a_token_asks_for_one(make_room, browser):
    room = await make_room(room_config(rules=False))
    await asyncio.to_thread(browser.get, f"{room.url}/")
    await until(lambda: browser.find_element(By.ID, "login").is_displayed())
    error = await until(lambda: browser.find_element(By.ID, "error").text)
    assert "401" in error and "token" in error
    field = await asyncio.to_thread(browser.find_element, By.ID, "token")
    await asyncio.to_thread(field.send_keys, room.viewer)
    await until(lambda: click(browser, "#login button"))
    groups = await until(lambda: cards(browser))
    assert {d for devs in groups.values() for d in devs} == {"room", "fancoil"}
    assert not browser.find_elements(By.CSS_SELECTOR, "button.ack")  # a viewer cannot acknowledge


LONG_STATE = "automatic control by the building management system"

CLIPPED_JS = """return Array.from(document.querySelectorAll('article.device td.value')).map(td =>
  [td.closest('tr').dataset.tag, td.textContent, td.scrollWidth, td.clientWidth]);"""


async def test_a_wide_state_text_wraps_on_the_overview_card_instead_of_being_clipped(make_room, browser, shots):
    """The value cell hid what did not fit (overflow hidden, no ellipsis, no tooltip): a long
    enumeration text lost its end, number included, with nothing to say so."""
    text = room_config(rules=False).replace("enum: {{0: auto,", f"enum: {{{{0: {LONG_STATE},").replace(
        "{0: auto,", f"{{0: {LONG_STATE},")
    assert LONG_STATE in text
    room = await make_room(text)
    assert await wait_until(lambda: room.site.value("room", "mode")[1].is_good, 5)
    await asyncio.to_thread(browser.get, f"{room.url}/#token={room.viewer}")
    await until(lambda: (c := cards(browser)) and any(
        devs.get("room", ("", {}))[1].get("room.mode", [""])[0] == f"{LONG_STATE} (0)" for devs in c.values()))
    cells = await asyncio.to_thread(js, browser, CLIPPED_JS)
    clipped = [c for c in cells if c[2] > c[3]]
    assert cells and not clipped, clipped  # every value shown whole
    width = await asyncio.to_thread(js, browser, "return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], width  # and the card still fits the tablet's width
    await asyncio.to_thread(browser.save_screenshot, str(shots / "overview-long-state-1024x768.png"))
