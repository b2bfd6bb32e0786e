"""The live status table of ``edge run``/``edge demo`` (issue 20), seen as a person sees it: in a real
terminal (tmux, its screen and its scrollback read back with capture-pane), and piped into a file.

On a terminal the table redraws in place (one table on the screen, none in the scrollback), polls/s
is a rate (a device polled every second shows 1.0, not 0, 1 or 2), the footer shows the spool and
the forwarder; piped, the tables follow one another as plain text without escape sequences."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import DemoEnv

from edge.cli.commands.run import PollRate

ROOT = Path(__file__).resolve().parents[1]
HEADER = re.compile(r"^device\s+bus\s+state\s+polls/s", re.M)


@pytest.fixture
def demo_env(tmp_path) -> Iterator[dict[str, str]]:
    ports = DemoEnv(tmp_path)  # the simulated devices' ports reserved for the test; OPC UA and API on port 0
    yield {**os.environ, **ports}
    ports.close()


class Tmux:
    """A tmux server of its own (socket in the test's directory) with one window of a given size."""

    def __init__(self, tmp_path: Path, cols: int, rows: int) -> None:
        self.socket = str(tmp_path / "tmux.sock")
        self.size = (cols, rows)

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True, timeout=20,
                              check=True).stdout

    def start(self, command: list[str], env: dict[str, str]) -> None:
        exports = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("EDGE_"))
        line = f"env {exports} {' '.join(command)}"
        self.run("-f", "/dev/null", "new-session", "-d", "-x", str(self.size[0]), "-y", str(self.size[1]), line)
        self.run("set-option", "-g", "remain-on-exit", "on")

    def screen(self) -> str:
        return self.run("capture-pane", "-p")

    def scrollback(self) -> str:
        """Everything above the visible screen (the main screen's history)."""
        return self.run("capture-pane", "-p", "-S", "-2000", "-E", "-1")

    def dead(self) -> bool:
        return self.run("display-message", "-p", "#{pane_dead}").strip() == "1"

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=20)


def rates(screen: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+)\s+\S+\s+online\s+([\d.]+)\s", screen, re.M)}


@pytest.mark.slow
def test_demo_table_redraws_in_place_in_a_terminal(tmp_path, demo_env):
    if not shutil.which("tmux"):
        pytest.fail("tmux is needed: apt-get install tmux (provisioning/setup.sh --test)")
    term = Tmux(tmp_path, 140, 40)
    term.start([sys.executable, "-m", "edge.cli.main", "demo", "--duration", "16"], demo_env)
    try:
        deadline = time.monotonic() + 60
        screens = []
        while time.monotonic() < deadline and not term.dead():
            screen = term.screen()
            if len(rates(screen)) == 6:
                screens.append(screen)
                if len(screens) >= 6:
                    break
            time.sleep(1.0)
        assert len(screens) >= 6, term.screen()
        for screen in screens:
            assert len(HEADER.findall(screen)) == 1, screen  # one table on the screen ...
        assert not HEADER.search(term.scrollback())  # ... and none left above it
        last = screens[-1]
        assert "spool:" in last and "forwarder: none configured" in last  # the footer
        r = rates(last)
        # the meter is polled every 1 s, the room sensors every 2 s, the drives every 0.5 s and 0.2 s
        assert 0.8 <= r["meter_main"] <= 1.2 and 0.35 <= r["th_room1"] <= 0.65, r
        assert 1.5 <= r["vfd_fan1"] <= 2.5 and r["vfd_pump1"] > r["vfd_fan1"], r
        assert all(line == line[:140] for line in last.splitlines())  # cut to the width, never wrapped
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not term.dead():
            time.sleep(0.5)
        final = term.screen() + term.scrollback()
        assert "appliance stopped" in final
        assert len(HEADER.findall(final)) == 1, final  # after the exit: the last table, once
    finally:
        term.kill()


def test_piped_table_is_plain_text(demo_env):
    out = subprocess.run([sys.executable, "-m", "edge.cli.main", "demo", "--duration", "5"], cwd=ROOT, env=demo_env,
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout
    assert len(HEADER.findall(out.stdout)) >= 3  # one table per second, one after another
    assert out.stdout.rstrip().endswith("appliance stopped")


def test_poll_rate_is_a_rate_not_a_count_per_refresh():
    s = 1_000_000_000
    rate = PollRate(window_s=10)
    polls, seen = 0, []
    t_poll = 0
    for k in range(1, 41):  # refreshes every ~1 s with jitter; polls every 1.0 s
        now = k * s + (300_000_000 if k % 3 == 0 else -200_000_000 if k % 5 == 0 else 0) + 50_000_000
        while t_poll + s <= now:
            t_poll += s
            polls += 1
        seen.append(rate.update(now, polls, t_poll))
    assert all(abs(x - 1.0) < 1e-9 for x in seen[3:]), seen  # counted per refresh this jumped between 0, 1, 2
    fast = PollRate()
    for k in range(1, 30):  # 5 Hz, refreshed every second
        fast_rate = fast.update(k * s, 5 * k, k * s - s // 10)
    assert abs(fast_rate - 5.0) < 1e-9
    for k in range(30, 45):  # the device stops answering: the rate falls to 0 within the window
        fast_rate = fast.update(k * s, 5 * 29, 29 * s - s // 10)
    assert fast_rate == 0.0
