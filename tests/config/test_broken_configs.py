"""Every broken configuration under tests/config/broken is rejected by `edge check` with file:line,
key path and the reason stated in the file's first line (``# expect: line N | path | text``)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge.cli.main import main

BROKEN = sorted((Path(__file__).parent / "broken").glob("*.yaml"))
EXPECT = re.compile(r"^# expect: line (\d+) \| (.+?) \| (.+)$")


def expectation(path: Path) -> tuple[int, str, str]:
    match = EXPECT.match(path.read_text().splitlines()[0])
    assert match, f"{path.name}: first line must be '# expect: line N | path | text'"
    return int(match.group(1)), match.group(2), match.group(3)


def test_there_are_at_least_twenty_broken_configs():
    assert len(BROKEN) >= 20


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_config_is_rejected_with_location_and_reason(path, capsys, monkeypatch):
    monkeypatch.delenv("EDGE_TEST_UNSET_TOKEN", raising=False)
    line, key_path, text = expectation(path)
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    wanted = [ln for ln in err.splitlines() if ln.startswith(f"{path}:{line}: error: {key_path}: ")]
    assert wanted, f"no error at {path.name}:{line} for {key_path}; got:\n{err}"
    assert any(text in ln for ln in wanted), f"reason {text!r} missing; got:\n{err}"
    assert "Traceback" not in err
