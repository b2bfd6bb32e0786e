"""Push the generated folder, data source and dashboards to a Grafana server (grafana-client).

Idempotent: the folder and the data source are created only when their uid is missing (an
existing data source is left as its owner configured it); dashboards are written with their
stable uid and ``overwrite: true``, so pushing again replaces them instead of adding copies.
Errors become one :class:`GrafanaPushError` that says what to fix (URL, token, rights).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

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
    api = GrafanaApi.from_url(url, credential=token or None, timeout=timeout_s)
    report = PushReport()
    step = "connect"
    try:
        step = "folder"
        report.folder, folder_uid = _ensure_folder(api, view)
        step = "data source"
        report.datasource = _ensure_datasource(api, view, influx_token)
        for name, model in build_dashboards(view).items():
            step = f"dashboard {name}"
            api.dashboard.update_dashboard({"dashboard": model, "folderUid": folder_uid, "overwrite": True,
                                            "message": "edge grafana push"})
            report.dashboards.append(model["uid"])
    except GrafanaUnauthorizedError as exc:
        raise GrafanaPushError(
            f"Grafana at {url} refused the token (401) while pushing the {step}: set GRAFANA_TOKEN to a valid "
            f"service-account token ({_message(exc)})") from exc
    except GrafanaClientError as exc:
        if exc.status_code == 403:
            raise GrafanaPushError(f"Grafana at {url} denied the {step} (403): the token needs the Editor role "
                                   "(and data source creation rights)") from exc
        raise GrafanaPushError(f"Grafana at {url} rejected the {step}: {exc.status_code} {_message(exc)}") from exc
    except GrafanaException as exc:
        raise GrafanaPushError(f"Grafana at {url} failed on the {step}: {exc}") from exc
    except OSError as exc:  # connection refused, DNS, TLS: niquests' errors are OSErrors
        raise GrafanaPushError(f"cannot reach Grafana at {url} ({type(exc).__name__}: {exc}); check "
                               "outputs.grafana.url or --url and that Grafana is running") from exc
    return report


def _message(exc: GrafanaException) -> str:
    resp = exc.response
    if isinstance(resp, dict) and "message" in resp:
        return str(resp["message"])
    return str(exc)


def _missing(exc: GrafanaClientError) -> bool:
    return exc.status_code == 404


def _ensure_folder(api: GrafanaApi, view: SiteView) -> tuple[str, str]:
    """("created" | "exists", folder uid): ours by uid, else a folder someone made with the same title."""
    try:
        api.folder.get_folder(view.folder_uid)
        return "exists", view.folder_uid
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
    for folder in api.folder.get_all_folders():
        if folder.get("title") == view.grafana.folder:
            return "exists", folder["uid"]
    api.folder.create_folder(view.grafana.folder, uid=view.folder_uid)
    return "created", view.folder_uid


def _ensure_datasource(api: GrafanaApi, view: SiteView, influx_token: str | None) -> str:
    try:
        api.datasource.get_datasource_by_uid(view.datasource_uid)
        return "exists"
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
    api.datasource.create_datasource(datasource(view, influx_token or None))
    return "created"
