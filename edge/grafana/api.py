"""The few Grafana HTTP API calls ``edge grafana push`` makes, on urllib3 (already the InfluxDB client's stack).

grafana-client was used before; it pulls niquests and urllib3-future, which *replaces* urllib3 in the
environment, so the InfluxDB forwarder would run on a fork (docs/decisions.md, "Dependencies"). Push
needs six JSON calls with a Bearer token: this module is those calls and nothing else.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import urllib3


class GrafanaHttpError(Exception):
    """Grafana answered with a non-2xx status; ``message`` is Grafana's own ``message`` field when it sent one."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message


class GrafanaApi:
    """A JSON client for one Grafana URL and service-account token (synchronous: used by the CLI only)."""

    def __init__(self, url: str, token: str | None, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        # No retries: a refused connection or a timeout is reported at once, with the URL.
        self._http = urllib3.PoolManager(timeout=urllib3.Timeout(total=timeout_s), retries=False)

    def request(self, method: str, path: str, body: object | None = None) -> Any:
        """One call; the decoded JSON answer, or :class:`GrafanaHttpError` for a non-2xx status.

        Connection failures raise urllib3's ``HTTPError`` subclasses (or ``OSError``) unchanged.
        """
        data = None if body is None else json.dumps(body).encode()
        resp = self._http.request(method, self.url + path, body=data, headers=self._headers)
        payload = _json(resp.data)
        if not 200 <= resp.status < 300:
            message = payload.get("message") if isinstance(payload, dict) else None
            raise GrafanaHttpError(resp.status, str(message or resp.reason or "error"))
        return payload

    # ------------------------------------------------------------------ the calls push makes

    def get_folder(self, uid: str) -> dict:
        return self.request("GET", f"/api/folders/{quote(uid, safe='')}")

    def folders(self) -> list[dict]:
        return self.request("GET", "/api/folders")

    def create_folder(self, title: str, uid: str) -> dict:
        return self.request("POST", "/api/folders", {"title": title, "uid": uid})

    def get_datasource(self, uid: str) -> dict:
        return self.request("GET", f"/api/datasources/uid/{quote(uid, safe='')}")

    def create_datasource(self, datasource: dict) -> dict:
        return self.request("POST", "/api/datasources", datasource)

    def save_dashboard(self, body: dict) -> dict:
        return self.request("POST", "/api/dashboards/db", body)


def _json(data: bytes) -> Any:
    """Grafana's JSON body, or None for an empty or non-JSON one (a proxy's HTML error page)."""
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None
