"""Grafana dashboards generated from the site configuration: build files, provision, push.

Entry points: :func:`edge.grafana.plantview.site_view` (what to draw, from a ``LoadedConfig``),
:func:`edge.grafana.dashboards.build_dashboards` (JSON models), :func:`edge.grafana.provisioning.build_site`
(files under ``grafana/``) and :func:`edge.grafana.push.push_site` (Grafana's HTTP API).

The dashboards are built with ``grafana-foundation-sdk``, an optional dependency (the extra
``[grafana]``): importing :mod:`edge.grafana.dashboards` without it raises ``ModuleNotFoundError``,
which ``edge grafana`` turns into a one-line error. This package itself imports nothing optional.
"""
