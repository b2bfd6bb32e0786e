"""Fuzz: random and mutated YAML to the configuration loader. Every load ends in a LoadedConfig or a
ConfigError whose every issue has a message and names the file, with a line wherever the file has
the key the issue is about; never another exception.

Three sources of input: arbitrary text; line-level mutations of the demo site's text (deleted,
duplicated, re-indented lines, inserted characters); structured mutations of the demo's data
(a key deleted, a value replaced by a value of another type, an unknown key, a list item duplicated).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.config.errors import ConfigError
from edge.config.loader import LoadedConfig, load_config

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "provisioning" / "sites" / "demo" / "edge.yaml"
ENV = {"EDGE_RUN_DIR": "/tmp/edge-fuzz", "EDGE_DATA_DIR": "/tmp/edge-fuzz/data",
       "EDGE_DEMO_PLC_PORT": "15020", "EDGE_DEMO_GATEWAY_PORT": "15030"}
FUZZ = settings(max_examples=300, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
pytestmark = pytest.mark.timeout(240)


def demo_text() -> str:
    """The demo site with an absolute plugins_dir, so a copy loads from any folder."""
    return DEMO.read_text().replace("plugins_dir: ../../../plugins", f"plugins_dir: {REPO / 'plugins'}")


DEMO_TEXT = demo_text()
DEMO_DATA = yaml.safe_load(DEMO_TEXT)


def top_keys(text: str) -> set:
    """Top-level keys of ``text`` as YAML, if it parses to a mapping (to know which lines must be named)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return set()
    except Exception:  # noqa: BLE001 - pyyaml raises a few non-YAMLError exceptions on odd input
        return set()
    return set(data) if isinstance(data, dict) else set()


def check_load(path: Path, text: str, strict_plugins: bool = True) -> LoadedConfig | ConfigError:
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        return load_config(path, env=ENV, strict_plugins=strict_plugins)
    except ConfigError as exc:
        assert exc.issues, "a ConfigError without issues"
        keys = top_keys(text)
        for issue in exc.issues:
            assert issue.message.strip(), f"an issue without a message: {issue!r}"
            assert issue.file == str(path), issue
            rendered = str(issue)  # must not raise on any value
            assert rendered.startswith(str(path)), rendered
            if issue.path and issue.path[0] in keys:
                assert issue.line is not None, f"the file has {issue.path[0]!r} but the issue has no line: {issue}"
        return exc


@pytest.mark.parametrize("text", ["~\n", "Null", "--- null\n"])
def test_a_null_document_is_a_clear_error(tmp_path, text):
    result = check_load(tmp_path / "edge.yaml", text)
    assert isinstance(result, ConfigError)


@pytest.mark.parametrize("text", ["!0", "site: !x demo\n", "a: !!python/object x\n"])
def test_an_unknown_yaml_tag_is_a_clear_error(tmp_path, text):
    result = check_load(tmp_path / "edge.yaml", text)
    assert isinstance(result, ConfigError) and result.issues[0].line == 1


@pytest.fixture
def cfg_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzzcfg") / "edge.yaml"


@FUZZ
@given(text=st.text(max_size=400))
def test_arbitrary_text(cfg_path, text):
    check_load(cfg_path, text)


yaml_ish = st.text(alphabet=st.sampled_from(list("abcdefgnmst_:-[]{},'\"#&*!|>%@` \n\t0123456789.")), max_size=300)


@FUZZ
@given(text=yaml_ish)
def test_yaml_like_text(cfg_path, text):
    check_load(cfg_path, text)


line_edit = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, 200)),
    st.tuples(st.just("duplicate"), st.integers(0, 200)),
    st.tuples(st.just("indent"), st.integers(0, 200), st.integers(-4, 4)),
    st.tuples(st.just("insert"), st.integers(0, 200), st.integers(0, 80), st.text(min_size=1, max_size=6)),
)


def edit_lines(text: str, edits: list[tuple]) -> str:
    lines = text.splitlines()
    for e in edits:
        if not lines:
            break
        i = e[1] % len(lines)
        if e[0] == "delete":
            del lines[i]
        elif e[0] == "duplicate":
            lines.insert(i, lines[i])
        elif e[0] == "indent":
            lines[i] = " " * e[2] + lines[i] if e[2] >= 0 else lines[i][-e[2]:]
        else:
            col = e[2] % (len(lines[i]) + 1)
            lines[i] = lines[i][:col] + e[3] + lines[i][col:]
    return "\n".join(lines) + "\n"


@FUZZ
@given(edits=st.lists(line_edit, min_size=1, max_size=4), strict=st.booleans())
def test_line_mutations_of_the_demo(cfg_path, edits, strict):
    text = edit_lines(DEMO_TEXT, edits)
    check_load(cfg_path, text, strict)


def paths_of(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in ``data`` (mappings and lists), including the empty top level."""
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += paths_of(v, (*prefix, i))
    return out


ALL_PATHS = [p for p in paths_of(DEMO_DATA) if p]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["", "0x10", "1e400", "${UNSET_VAR}", "~", "ABCD", "-1"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)
mutation = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(ALL_PATHS)),
    st.tuples(st.just("replace"), st.sampled_from(ALL_PATHS), values),
    st.tuples(st.just("unknown_key"), st.sampled_from(ALL_PATHS), st.text(min_size=1, max_size=10), scalars),
    st.tuples(st.just("duplicate_item"), st.sampled_from(ALL_PATHS)),
)


def apply(data: Any, m: tuple) -> Any:
    data = copy.deepcopy(data)
    path = m[1]
    parent = data
    for part in path[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return data  # an earlier mutation removed the way there
    last = path[-1]
    try:
        if m[0] == "delete":
            del parent[last]
        elif m[0] == "replace":
            parent[last] = m[2]
        elif m[0] == "unknown_key" and isinstance(parent[last], dict):
            parent[last][m[2]] = m[3]
        elif m[0] == "duplicate_item" and isinstance(parent, list):
            parent.insert(last, copy.deepcopy(parent[last]))
    except (KeyError, IndexError, TypeError):
        pass
    return data


@FUZZ
@given(mutations=st.lists(mutation, min_size=1, max_size=3), strict=st.booleans())
def test_structured_mutations_of_the_demo(cfg_path, mutations, strict):
    data = DEMO_DATA
    for m in mutations:
        data = apply(data, m)
    try:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        return  # not representable as YAML (e.g. a lone surrogate): nothing to load
    check_load(cfg_path, text, strict)


def test_the_unmutated_demo_loads(cfg_path):
    """The baseline of the mutations above: the demo itself loads, so a refusal is the mutation's doing."""
    result = check_load(cfg_path, DEMO_TEXT)
    assert isinstance(result, LoadedConfig) and len(result.devices) == 6
    dumped = check_load(cfg_path, yaml.safe_dump(DEMO_DATA, sort_keys=False))
    assert isinstance(dumped, LoadedConfig)
