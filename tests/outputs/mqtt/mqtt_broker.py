"""A real Mosquitto broker (Debian's ``mosquitto``) as a child process on a loopback port.

Mosquitto cannot be told to bind port 0, so a port is picked free, written into the config and
the broker started; if another process took the port meanwhile, Mosquitto exits with "Address
already in use" (seen in its log) and the start is retried on a new port. Readiness is the log line
of the listener on *this* port plus a TCP connect, so a foreign server that took the port is never
mistaken for the broker. Variants: plain, username/password, TLS (server certificate; client
certificate required). ``kill()`` is SIGKILL (an outage), ``start()`` again reuses the same port.
"""
from __future__ import annotations

import datetime
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

START_ATTEMPTS = 8
READY_TIMEOUT_S = 10.0


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if found is None:
        raise RuntimeError("mosquitto is not installed: bash provisioning/setup.sh --test installs it")
    return found


def _pick_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Pki:
    """A test CA, the broker's certificate (CN and SAN 127.0.0.1/localhost) and a client certificate."""

    dir: Path
    ca: Path = field(init=False)
    server_cert: Path = field(init=False)
    server_key: Path = field(init=False)
    client_cert: Path = field(init=False)
    client_key: Path = field(init=False)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge test CA")])
        now = datetime.datetime.now(datetime.UTC)
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
              .not_valid_after(now + datetime.timedelta(days=2))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
        self.ca = self._write("ca.pem", ca.public_bytes(serialization.Encoding.PEM))
        self.server_cert, self.server_key = self._leaf("server", ca, ca_key, now, server=True)
        self.client_cert, self.client_key = self._leaf("client", ca, ca_key, now, server=False)

    def _leaf(self, name: str, ca, ca_key, now, server: bool) -> tuple[Path, Path]:
        import ipaddress

        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1" if server else "edge-client")])
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
             .not_valid_after(now + datetime.timedelta(days=2)))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                              x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        c = self._write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
        k = self._write(f"{name}.key", key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.TraditionalOpenSSL,
                                                         serialization.NoEncryption()))
        return c, k

    def _write(self, name: str, data: bytes) -> Path:
        p = self.dir / name
        p.write_bytes(data)
        return p


class Mosquitto:
    """One broker process; ``users`` {name: password} turns on authentication, ``pki`` TLS."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None, pki: Pki | None = None,
                 require_client_cert: bool = False):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.users = users
        self.pki = pki
        self.require_client_cert = require_client_cert
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.pki else 'mqtt'}://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        # run as root (CI), mosquitto would switch to its own user and could not read the test's files
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr",
                 "log_type error", "log_type warning", "log_type notice", "log_type information",
                 "max_queued_messages 1000000", "max_inflight_messages 0"]
        if os.geteuid() == 0:
            lines.append("user root")
        if self.users:
            pwfile = self.dir / "passwords"
            pwfile.write_text("")
            for user, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, password], check=True,
                               capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if self.pki:
            lines += [f"cafile {self.pki.ca}", f"certfile {self.pki.server_cert}", f"keyfile {self.pki.server_key}"]
            if self.require_client_cert:
                lines += ["require_certificate true"]
        path = self.dir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> None:
        """Start (again on the same port after a kill; on a new free port the first time or on a clash)."""
        for attempt in range(START_ATTEMPTS):
            if not self.port or (attempt and self.starts == 0):
                self.port = _pick_port()
            log = self.dir / "broker.log"
            with open(log, "wb") as err:
                self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self._config())],
                                             stdout=subprocess.DEVNULL, stderr=err)
            outcome = self._wait_ready(log)
            if outcome == "ready":
                self.starts += 1
                return
            self._reap()
            if outcome == "in_use" and self.starts:
                time.sleep(0.5)  # the same port is still held: wait for it rather than move
        raise RuntimeError(f"mosquitto did not start after {START_ATTEMPTS} attempts: {self._log_tail()}")

    def _wait_ready(self, log: Path) -> str:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace") if log.exists() else ""
            if "Address already in use" in text:
                return "in_use"
            if self.proc is not None and self.proc.poll() is not None:
                return "in_use" if "in use" in log.read_text(errors="replace").lower() else "died"
            if f"listen socket on port {self.port}" in text:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return "ready"
                except OSError:
                    pass
            time.sleep(0.02)
        return "timeout"

    def _log_tail(self) -> str:
        log = self.dir / "broker.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"

    def kill(self) -> None:
        """SIGKILL: every connection drops at once, nothing is flushed (a broker crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self._reap()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
