"""FAKE Grafana: a small local HTTP server that answers like Grafana's HTTP API and records requests.

No Grafana server can be installed on these machines (see DESIGN.md), so ``edge grafana push``
is tested against this fake. It implements only what push uses, with Grafana's semantics:
Bearer-token auth (401 otherwise), folders by uid (409 on a duplicate), data sources by uid
(409 on a duplicate name), ``POST /api/dashboards/db`` (412 when the uid exists without
``overwrite``, 400 for an unknown folder), and ``GET /api/search``.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


@dataclass
class Recorded:
    method: str
    path: str
    authorization: str | None
    body: object | None


@dataclass
class FakeGrafanaState:
    token: str
    folders: dict[str, dict] = field(default_factory=dict)  # uid -> folder
    datasources: dict[str, dict] = field(default_factory=dict)  # uid -> data source
    dashboards: dict[str, dict] = field(default_factory=dict)  # uid -> {"dashboard":..., "folderUid":..., "version"}
    requests: list[Recorded] = field(default_factory=list)
    next_id: int = 1

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.path.startswith(prefix))


class FakeGrafana:
    """FAKE Grafana HTTP API on 127.0.0.1 and a free port; ``with FakeGrafana(token) as g: g.url``."""

    def __init__(self, token: str) -> None:
        self.state = FakeGrafanaState(token=token)
        state = self.state
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _send(self, status: int, payload: object) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                url = urlparse(self.path)
                with lock:
                    state.requests.append(Recorded(method, url.path, self.headers.get("Authorization"), body))
                    if self.headers.get("Authorization") != f"Bearer {state.token}":
                        return self._send(401, {"message": "invalid API key"})
                    status, payload = route(state, method, url.path, parse_qs(url.query), body)
                self._send(status, payload)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._handle("PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeGrafana:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def route(s: FakeGrafanaState, method: str, path: str, query: dict, body) -> tuple[int, object]:
    """Grafana's answers for the endpoints push uses."""
    parts = path.strip("/").split("/")
    if path == "/api/health":
        return 200, {"database": "ok", "version": "11.3.0"}
    if path == "/api/folders" and method == "GET":
        return 200, [{"uid": f["uid"], "title": f["title"]} for f in s.folders.values()]
    if path == "/api/folders" and method == "POST":
        uid, title = body.get("uid"), body["title"]
        if uid in s.folders or any(f["title"] == title for f in s.folders.values()):
            return 409, {"message": "a folder with the same name or uid already exists"}
        s.folders[uid] = {"id": s.next_id, "uid": uid, "title": title, "version": 1}
        s.next_id += 1
        return 200, s.folders[uid]
    if parts[:2] == ["api", "folders"] and len(parts) == 3 and method == "GET":
        return (200, s.folders[parts[2]]) if parts[2] in s.folders else (404, {"message": "folder not found"})
    if parts[:3] == ["api", "datasources", "uid"] and len(parts) == 4 and method == "GET":
        ds = s.datasources.get(parts[3])
        return (200, ds) if ds else (404, {"message": "Data source not found"})
    if path == "/api/datasources" and method == "POST":
        if any(d["name"] == body["name"] for d in s.datasources.values()) or body.get("uid") in s.datasources:
            return 409, {"message": "data source with the same name already exists"}
        ds = {**body, "id": s.next_id}
        s.next_id += 1
        s.datasources[ds["uid"]] = ds
        return 200, {"datasource": ds, "id": ds["id"], "message": "Datasource added", "name": ds["name"]}
    if path == "/api/dashboards/db" and method == "POST":
        return _save_dashboard(s, body)
    if path == "/api/search" and method == "GET":
        tags = query.get("tag", [])
        hits = [{"uid": uid, "title": d["dashboard"]["title"], "type": "dash-db", "folderUid": d["folderUid"],
                 "tags": d["dashboard"].get("tags", [])} for uid, d in sorted(s.dashboards.items())]
        return 200, [h for h in hits if all(t in h["tags"] for t in tags)]
    return 404, {"message": "Not found"}


def _save_dashboard(s: FakeGrafanaState, body: dict) -> tuple[int, object]:
    dash, folder = body["dashboard"], body.get("folderUid")
    if folder and folder not in s.folders:
        return 400, {"message": "folder not found"}
    uid = dash.get("uid")
    if not uid or not dash.get("title"):
        return 400, {"message": "dashboard needs a uid and a title"}
    existing = s.dashboards.get(uid)
    if existing and not body.get("overwrite"):
        return 412, {"status": "name-exists", "message": "A dashboard with the same uid already exists"}
    if any(d["dashboard"]["title"] == dash["title"] and d["folderUid"] == folder and u != uid
           for u, d in s.dashboards.items()):
        return 412, {"status": "name-exists", "message": "A dashboard with the same name in the folder already exists"}
    version = existing["version"] + 1 if existing else 1
    s.dashboards[uid] = {"dashboard": dash, "folderUid": folder, "version": version}
    return 200, {"id": s.next_id, "uid": uid, "url": f"/d/{uid}", "status": "success", "version": version}
