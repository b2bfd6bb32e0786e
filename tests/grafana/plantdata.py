"""Sites to test the dashboards on, and the exporter's real line protocol for them.

:func:`site_names`/:func:`make_site` give the demo plant, the demo plant with aggregate windows and per-plugin
measurements, and one site per ``plugins/*/sample.yaml`` (new plugins are covered as they
appear). :func:`exporter_lines` runs the appliance's own objects on a site — the Appliance's
pipeline, the Outputs' spool and aggregator, ``_record_health`` for ``edge_health`` and
``_close_windows`` for ``edge_window`` — feeds them simulated polls on a simulated clock, and
returns the line protocol the InfluxDB exporter (``LineEncoder``) would send.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from edge.config.loader import LoadedConfig, load_config
from edge.core.model import DeviceDiagnostics, DeviceState, Plant, Quality, SampleBatch, TagInfo
from edge.outputs.influx import LineEncoder
from edge.runtime.app import Appliance

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"
DEMO = ROOT / "provisioning" / "sites" / "demo" / "edge.yaml"
STEP_NS = 5_000_000_000  # one poll every 5 s
POLLS = 120  # ten minutes of data
HEALTH_EVERY = 2  # an edge_health record every 10 s
FAILED_EVERY = 10  # every 10th poll fails (all tags Bad_CommunicationError)


@dataclass(frozen=True)
class Site:
    name: str  # test id
    path: Path


def sample_snippets() -> list[Path]:
    """Every plugin's sample.yaml (the template's too: it names a real plugin folder)."""
    return sorted(PLUGINS.glob("*/sample.yaml"))


def _site_file(doc: dict, path: Path, data_dir: Path, measurement: str = "device") -> Path:
    """Write ``doc`` as a loadable site: absolute plugins dir, private data dir, an InfluxDB output."""
    doc = dict(doc)
    doc["plugins_dir"] = str(PLUGINS)
    doc["runtime"] = {**(doc.get("runtime") or {}), "data_dir": str(data_dir)}
    outputs = dict(doc.get("outputs") or {})
    # the forwarder is built but never started: the test loads the encoded lines itself
    outputs["influxdb"] = {"url": "http://127.0.0.1:1", "bucket": "edge", "measurement": measurement}
    outputs.pop("opcua", None)
    doc["outputs"] = outputs
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def site_names() -> list[str]:
    """Test site ids: the demo plant, the demo with windows and per-plugin measurements, every sample.yaml."""
    return ["demo", "demo-windows-per-plugin", *(f"sample-{p.parent.name}" for p in sample_snippets())]


def make_site(name: str, tmp: Path) -> Site:
    """Write the site ``name`` (one of :func:`site_names`) as a loadable file under ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    if name == "demo":
        return Site(name, _site_file(yaml.safe_load(DEMO.read_text()), tmp / "demo.yaml", tmp / "data-demo"))
    if name == "demo-windows-per-plugin":
        doc = yaml.safe_load(DEMO.read_text())
        for dev in doc["devices"]:
            if dev.get("plugin") == "xymd02_th":
                dev["override"] = {"temperature": {"aggregate": {"windows": ["10s", "1min"], "capacity_s": 600}},
                                   "humidity": {"aggregate": {"windows": ["1min"], "capacity_s": 600}}}
        return Site(name, _site_file(doc, tmp / "windows.yaml", tmp / "data-windows", measurement="plugin"))
    plugin = name.removeprefix("sample-")
    snippet = PLUGINS / plugin / "sample.yaml"
    doc = {"site": {"name": name}, **yaml.safe_load(snippet.read_text())}
    return Site(name, _site_file(doc, tmp / f"{plugin}.yaml", tmp / f"data-{plugin}"))


# ----------------------------------------------------------------------------- simulated polls


def _value(tag: TagInfo, poll: int) -> float:
    """A value inside the tag's range that moves with the poll; enum states and bits cycle."""
    if tag.enum:
        keys = sorted(tag.enum)
        return float(keys[poll % len(keys)])
    if tag.dtype == "bool":
        return float((poll // 3) % 2)
    lo, hi = (tag.low, tag.high) if tag.low is not None and tag.high is not None else (0.0, 100.0)
    frac = 0.2 + 0.6 * ((poll * 7 + tag.id) % 20) / 19
    return lo + (hi - lo) * frac


def poll_batch(plant: Plant, device: str, poll: int, ts_ns: int) -> SampleBatch:
    """One poll of one device: every FAILED_EVERY-th fails; otherwise the first tag is stale every 7th."""
    dev = plant.device(device)
    ids = np.asarray(dev.tag_ids, dtype=np.int32)
    if poll % FAILED_EVERY == FAILED_EVERY - 1:
        return SampleBatch.bad(device, ts_ns, ids, Quality.BAD_COMM_ERROR)
    tags = [plant.tags[i] for i in ids]
    values = np.array([np.nan if t.dtype == "string" else _value(t, poll) for t in tags], dtype=np.float64)
    quality = np.zeros(len(ids), dtype=np.uint8)
    if poll % 7 == 3:
        quality[0] = int(Quality.UNCERTAIN_LAST_USABLE)
    texts = {int(t.id): f"SN-{device}-{poll // 50}" for t in tags if t.dtype == "string"} or None
    return SampleBatch(device, ts_ns, ids, values, quality, texts)


def exporter_lines(loaded: LoadedConfig, base_ns: int, polls: int = POLLS,
                   on_poll: Callable[[Appliance, int], None] | None = None) -> list[str]:
    """Run ``polls`` simulated poll cycles through the appliance's outputs; the exporter's lines.

    ``on_poll(app, poll)`` runs before each poll (a test changes the forwarder's or reloads' state)."""
    app = Appliance(loaded, audit=False, outputs=True)
    out = app.outputs
    assert out is not None
    out.spool.start()
    try:
        app.pipeline.add("spool", out.spool)  # as Outputs.start() wires them
        if out.aggregator.tag_ids:
            app.pipeline.add("aggregator", out.aggregator)
        app.started_at = 1.0
        for p in range(polls):
            ts = base_ns + p * STEP_NS
            if on_poll is not None:
                on_poll(app, p)
            for rt in app.devices.values():
                app.pipeline.publish(poll_batch(loaded.plant, rt.name, p, ts))
                _count(rt.diag, p)
            out._close_windows(ts)
            if p % HEALTH_EVERY == 0:
                out._record_health(ts)
            _alarm_changes(out.spool, loaded, p, ts)
        assert out.spool.flush()
        enc = LineEncoder(out.spool, loaded.config.outputs.influxdb)
        rows = out.spool.unsent(0, None, 10_000_000)
        return [line for line in (enc.encode(r) for r in rows) if line]
    finally:
        out.spool.close()


def _alarm_changes(spool, loaded: LoadedConfig, poll: int, ts: int) -> None:
    """Every configured alarm activates, is acknowledged and clears once, as edge.intelligence.service records it."""
    from edge.grafana.plantview import alarm_name

    steps = {10: ("activated", "UNACK", 1, 0), 20: ("acknowledged", "ACKED", 1, 1), 30: ("cleared", "NORMAL", 0, 1)}
    if poll not in steps:
        return
    transition, state, active, acked = steps[poll]
    for alarm in loaded.config.alarms or ():
        name = alarm_name(alarm)
        device = alarm.device or (alarm.tag or "").split(".")[0]
        spool.append_alarm(name, ts, {
            "device": device, "tag": alarm.tag, "kind": alarm.kind, "priority": alarm.priority,
            "transition": transition, "state": state, "active": active, "acked": acked, "shelved": 0,
            "severity": 500, "level": "H" if active else None, "value": 1.0, "message": alarm.message or name,
            "user": None, "comment": None})


def _count(diag: DeviceDiagnostics, poll: int) -> None:
    """What a poller would count after this poll (a failure every FAILED_EVERY polls)."""
    failed = poll % FAILED_EVERY == FAILED_EVERY - 1
    diag.requests += 2
    if failed:
        diag.polls_failed += 1
        diag.timeouts += 1
        diag.exceptions[2] = diag.exceptions.get(2, 0) + 1
        diag.state = DeviceState.OFFLINE
    else:
        diag.polls_ok += 1
        diag.state = DeviceState.ONLINE
    diag.latency_p50_ms = 10.0 + poll % 5
    diag.latency_p99_ms = 20.0 + poll % 11


def load(site: Site) -> LoadedConfig:
    return load_config(site.path)
