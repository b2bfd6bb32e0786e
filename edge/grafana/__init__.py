"""Grafana dashboards generated from the site configuration: build files, provision, push.

Entry points: :func:`edge.grafana.plantview.site_view` (what to draw, from a ``LoadedConfig``),
:func:`edge.grafana.dashboards.build_dashboards` (JSON models), :func:`edge.grafana.provisioning.build_site`
(files under ``grafana/``) and :func:`edge.grafana.push.push_site` (Grafana's HTTP API).
"""
from edge.grafana import influxql

influxql.register()  # Dashboard.from_json decodes InfluxDB targets as InfluxQLQuery
