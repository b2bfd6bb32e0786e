"""TLS (CA, client certificate) and username/password from ${ENV} or a file, against a real Mosquitto;
a broker that refuses the credentials is visible in the output's status, /api/status and /metrics,
and the output connects by itself once the credentials are right."""
from __future__ import annotations

import io

import httpx
from harness import wait_until
from mqtt_broker import Mosquitto
from mqtt_site import site_yaml
from spb_host import SpbHost

from edge.api.metrics import metrics_text
from edge.api.tokens import add_token


def spb_host_tls(broker: Mosquitto) -> SpbHost:
    host = SpbHost(broker.port)
    host.client.tls_set(ca_certs=str(broker.pki.ca), certfile=str(broker.pki.client_cert),
                        keyfile=str(broker.pki.client_key))
    return host.start()


async def test_username_and_password_from_env_and_from_a_file(tmp_path, make_site, hosts, monkeypatch):
    broker = Mosquitto(tmp_path / "broker", users={"edge": "s3cret-pw", "host": "host-pw"})
    broker.start()
    try:
        host = SpbHost(broker.port)
        host.client.username_pw_set("host", "host-pw")
        hosts.append(host.start())
        monkeypatch.setenv("MQTT_TEST_USER", "edge")
        monkeypatch.setenv("MQTT_TEST_PASSWORD", "s3cret-pw")
        site = await make_site(site_yaml(broker.url, mqtt_extra="username: ${MQTT_TEST_USER}\n"
                                                                "    password: ${MQTT_TEST_PASSWORD}"))
        assert await wait_until(lambda: len(host.of_kind("DBIRTH")) == 2, 10), site.app.outputs.mqtt.stats()
        await site.app.stop()
        pw = tmp_path / "mqtt-password"
        pw.write_text("s3cret-pw\n")
        site2 = await make_site(site_yaml(broker.url, mqtt_extra=f"username: edge\n    password_file: {pw}"))
        assert await wait_until(lambda: len(host.of_kind("NBIRTH")) == 2, 10), site2.app.outputs.mqtt.stats()
    finally:
        broker.stop()


async def test_refused_credentials_are_visible_and_heal(tmp_path, make_site, hosts):
    broker = Mosquitto(tmp_path / "broker", users={"edge": "right-pw"})
    broker.start()
    try:
        pw = tmp_path / "mqtt-password"
        pw.write_text("wrong-pw\n")
        token = add_token(tmp_path / "tokens.txt", "view", "viewer")
        text = site_yaml(broker.url, mqtt_extra=f"username: edge\n    password_file: {pw}")
        site = await make_site(text + "api: {port: 0, tokens_file: '{tmp}/tokens.txt'}\n")
        out = site.app.outputs.mqtt
        assert await wait_until(lambda: out.stats()["state"] == "refused", 10), out.stats()
        async with httpx.AsyncClient(base_url=site.app.intelligence.url,
                                     headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
            r = await client.get("/api/status")
        assert r.status_code == 200, r.text
        status = r.json()["outputs"]["mqtt"]
        assert status["state"] == "refused" and "Not authorized" in status["last_error"]
        assert status["connect_failures"] >= 1
        metrics = metrics_text(site.app.intelligence).decode()
        assert 'edge_output_up{output="mqtt",state="refused"} 0.0' in metrics
        assert "edge_mqtt_connect_failures" in metrics
        pw.write_text("right-pw\n")  # read again at every connection attempt: heals by itself
        assert await wait_until(lambda: out.stats()["state"] == "online", 10), out.stats()
        assert 'edge_output_up{output="mqtt",state="online"} 1.0' in metrics_text(site.app.intelligence).decode()
        from edge.cli.commands.run import StatusTable

        table = StatusTable(site.app, io.StringIO()).render()
        assert "mqtt: online" in table
    finally:
        broker.stop()


async def test_tls_with_ca_and_client_certificate(tmp_path, make_site, hosts, pki):
    broker = Mosquitto(tmp_path / "broker", pki=pki, require_client_cert=True)
    broker.start()
    try:
        host = spb_host_tls(broker)
        hosts.append(host)
        tls = (f"tls: {{ca_file: {pki.ca}, cert_file: {pki.client_cert}, key_file: {pki.client_key}}}")
        site = await make_site(site_yaml(broker.url, mqtt_extra=tls))
        assert broker.url.startswith("mqtts://")
        assert await wait_until(lambda: len(host.of_kind("DBIRTH")) == 2 and len(host.of_kind("DDATA")) > 3, 10), \
            site.app.outputs.mqtt.stats()
        await site.app.stop()
        # without the client certificate the broker refuses the TLS handshake: visible, not fatal
        site2 = await make_site(site_yaml(broker.url, mqtt_extra=f"tls: {{ca_file: {pki.ca}}}"))
        out = site2.app.outputs.mqtt
        assert await wait_until(lambda: out.stats()["connect_failures"] >= 1, 10), out.stats()
        assert out.stats()["state"] in ("broker_down", "refused") and out.stats()["last_error"]
    finally:
        broker.stop()


async def test_tls_refuses_a_broker_signed_by_another_ca(tmp_path, make_site, pki):
    from mqtt_broker import Pki

    other = Pki(tmp_path / "other")
    broker = Mosquitto(tmp_path / "broker", pki=pki)
    broker.start()
    try:
        site = await make_site(site_yaml(broker.url, mqtt_extra=f"tls: {{ca_file: {other.ca}}}"))
        out = site.app.outputs.mqtt
        assert await wait_until(lambda: out.stats()["connect_failures"] >= 1, 10), out.stats()
        assert "certificate" in out.stats()["last_error"].lower() and out.stats()["state"] != "online"
    finally:
        broker.stop()
