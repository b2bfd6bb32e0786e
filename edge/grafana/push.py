"""Push the generated folder, data source and dashboards to a Grafana server (its HTTP API, :mod:`edge.grafana.api`).

Idempotent: the folder and the data source are created only when their uid is missing (an
existing data source is left as its owner configured it); dashboards are written with their
stable uid and ``overwrite: true``, so pushing again replaces them instead of adding copies.
Errors become one :class:`GrafanaPushError` that says what to fix (URL, token, rights).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import urllib3

from edge.grafana.api import GrafanaApi, GrafanaHttpError
from edge.grafana.dashboards import build_dashboards
from edge.grafana.plantview import SiteView
from edge.grafana.provisioning import datasource

DEFAULT_TIMEOUT_S = 10.0


class GrafanaPushError(Exception):
    """Grafana could not be reached or refused a request; the message says what to check."""


@dataclass
class PushReport:
    folder: str = ""  # "created" or "exists"
    datasource: str = ""  # "created" or "exists"
    dashboards: list[str] = field(default_factory=list)  # uids written

    def summary(self) -> str:
        return (f"folder {self.folder}, data source {self.datasource}, "
                f"{len(self.dashboards)} dashboard(s) written: {', '.join(self.dashboards)}")


def push_site(view: SiteView, url: str, token: str | None, influx_token: str | None = None,
              timeout_s: float = DEFAULT_TIMEOUT_S) -> PushReport:
    """Create the folder and data source if missing, then write every dashboard of the site."""
    api = GrafanaApi(url, token or None, timeout_s)
    report = PushReport()
    step = "connect"
    try:
        step = "folder"
        report.folder, folder_uid = _ensure_folder(api, view)
        step = "data source"
        report.datasource = _ensure_datasource(api, view, influx_token)
        for name, model in build_dashboards(view).items():
            step = f"dashboard {name}"
            api.save_dashboard({"dashboard": model, "folderUid": folder_uid, "overwrite": True,
                                "message": "edge grafana push"})
            report.dashboards.append(model["uid"])
    except GrafanaHttpError as exc:
        raise GrafanaPushError(_refusal(url, step, exc)) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:  # connection refused, DNS, TLS, timeout
        raise GrafanaPushError(f"cannot reach Grafana at {url} ({type(exc).__name__}: {exc}); check "
                               "outputs.grafana.url or --url and that Grafana is running") from exc
    return report


def _refusal(url: str, step: str, exc: GrafanaHttpError) -> str:
    """What to fix, for a status Grafana answered while pushing ``step``."""
    if exc.status == 401:
        return (f"Grafana at {url} refused the token (401) while pushing the {step}: set GRAFANA_TOKEN to a valid "
                f"service-account token ({exc.message})")
    if exc.status == 403:
        return (f"Grafana at {url} denied the {step} (403): the token needs the Editor role "
                "(and data source creation rights)")
    return f"Grafana at {url} rejected the {step}: {exc.status} {exc.message}"


def _ensure_folder(api: GrafanaApi, view: SiteView) -> tuple[str, str]:
    """("created" | "exists", folder uid): ours by uid, else a folder someone made with the same title."""
    try:
        api.get_folder(view.folder_uid)
        return "exists", view.folder_uid
    except GrafanaHttpError as exc:
        if exc.status != 404:
            raise
    for folder in api.folders():
        if folder.get("title") == view.grafana.folder:
            return "exists", str(folder["uid"])
    api.create_folder(view.grafana.folder, uid=view.folder_uid)
    return "created", view.folder_uid


def _ensure_datasource(api: GrafanaApi, view: SiteView, influx_token: str | None) -> str:
    try:
        api.get_datasource(view.datasource_uid)
        return "exists"
    except GrafanaHttpError as exc:
        if exc.status != 404:
            raise
    api.create_datasource(datasource(view, influx_token or None))
    return "created"
