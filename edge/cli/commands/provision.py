"""``edge provision``: prepare the files a site configuration needs before its first ``edge run``.

``edge provision CONFIG``
    creates the data directory, the spool's directory, the OPC UA PKI (server certificate and key when
    a Basic256Sha256 policy is configured) and an empty users file, all with tight permissions
    (:data:`MODES`). Idempotent: what exists is kept (a certificate is never replaced: clients trust
    it), only modes that are too open are tightened. A configuration with any error is refused
    before anything is written.
``edge provision user CONFIG NAME --role operator [--password-file FILE]``
    adds or replaces an OPC UA user (the password from the file's first line, else stdin).
``edge provision certs CONFIG [--overwrite]``
    creates (or with ``--overwrite`` replaces) only the server certificate.
``edge provision trust CONFIG CERT``
    trusts a client certificate (a file, or the thumbprint of a rejected one).
``edge provision token CONFIG NAME --role operator`` / ``CONFIG --list`` / ``CONFIG NAME --revoke``
    adds (or replaces) an HTTP API token and prints it once; lists the tokens' names and roles;
    revokes one (the running appliance stops accepting it at its next reload).

With ``api.tls_cert_file``/``api.tls_key_file`` configured, ``edge provision`` and ``edge provision
certs`` also create the HTTPS certificate (self-signed, PEM) and key (0600) when they are missing.

Relative ``pki_dir`` and ``users_file`` are taken relative to the configuration's folder.
"""
from __future__ import annotations

import argparse
import os
import socket
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edge.api.tokens import TokensFileError, add_token, list_tokens, revoke_token
from edge.cli.commands import CliError
from edge.config.loader import LoadedConfig, load_config
from edge.security.pki import (
    PkiPaths,
    create_server_certificate,
    create_tls_certificate,
    trust_client_certificate,
)
from edge.security.users import UsersFileError, add_user

# What `edge provision` creates and the mode it leaves (docs/provisioning.md has the same table).
MODES: dict[str, int] = {
    "data_dir": 0o750,  # spool, audit log, pid file: the service user, and its group may read
    "spool_dir": 0o750,
    "pki_dir": 0o750,  # the PKI root, own/, trusted/certs, rejected/certs
    "pki_private": 0o700,  # own/private: only the service user
    "key": 0o600,  # own/private/key.pem
    "cert": 0o644,  # own/cert.der: public by nature
    "users_file": 0o600,  # salted hashes, still secret
    "tokens_file": 0o600,  # API token hashes
    "tls_key": 0o600,  # the HTTPS key of the API
    "tls_cert": 0o644,
}
ACTIONS = ("user", "certs", "trust", "token")


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.usage = ("edge provision CONFIG [--owner USER] [--hostname HOST]\n"
               "       edge provision user CONFIG NAME --role {viewer,operator} [--password-file FILE]\n"
               "       edge provision certs CONFIG [--overwrite] [--hostname HOST]\n"
               "       edge provision trust CONFIG CERT\n"
               "       edge provision token CONFIG NAME --role {viewer,operator} | CONFIG --list | CONFIG NAME --revoke")
    p.add_argument("words", nargs="+", metavar="ARG",
                   help="CONFIG, or user/certs/trust/token followed by CONFIG ...")
    p.add_argument("--owner", metavar="USER", default=None,
                   help="give what is created to this user and its group (when run as root for a service user)")
    p.add_argument("--hostname", default=None, help="host name in the server certificate (default: this host's)")
    p.add_argument("--role", choices=["viewer", "operator"], default=None,
                   help="role of the user or token (provision user, provision token)")
    p.add_argument("--list", action="store_true", help="list the API tokens' names and roles (provision token)")
    p.add_argument("--revoke", action="store_true", help="remove the API token NAME (provision token)")
    p.add_argument("--password-file", default=None, metavar="FILE",
                   help="read the password from FILE's first line (default: standard input)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing server certificate (certs)")


@dataclass
class Report:
    """What a provisioning run did, one line per path (printed, and returned for tests)."""

    lines: list[str] = field(default_factory=list)

    def add(self, what: str, path: Path, mode: int | None = None) -> None:
        self.lines.append(f"{what:<8} {path}" + (f" ({mode:04o})" if mode is not None else ""))


@dataclass(frozen=True)
class Layout:
    """Where a configuration's files go, resolved once."""

    data_dir: Path
    spool_dir: Path
    pki_dir: Path | None
    users_file: Path | None
    secure: bool  # a server certificate is needed (secure policies, or encrypted passwords on None)
    application_uri: str
    endpoint_host: str
    tokens_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    api_host: str = ""

    @classmethod
    def of(cls, loaded: LoadedConfig) -> Layout:
        outputs = loaded.config.outputs
        spool = Path(outputs.spool.path)
        spool = spool if spool.is_absolute() else loaded.data_dir / spool
        opcua = outputs.opcua if outputs.opcua is not None and outputs.opcua.enabled else None
        api = loaded.config.api if loaded.config.api is not None and loaded.config.api.enabled else None
        return cls(
            data_dir=loaded.data_dir,
            spool_dir=spool if spool.is_dir() else spool.parent,
            pki_dir=opcua.pki_dir if opcua else None,
            users_file=opcua.users_file if opcua else None,
            secure=bool(opcua and opcua.needs_certificate),
            application_uri=opcua.application_uri_for(loaded.plant.site) if opcua else "",
            endpoint_host=opcua.host if opcua else "",
            tokens_file=Path(api.tokens_file) if api and api.tokens_file else None,
            tls_cert=Path(api.tls_cert_file) if api and api.tls_cert_file else None,
            tls_key=Path(api.tls_key_file) if api and api.tls_key_file else None,
            api_host=api.host if api else "",
        )


class Provisioner:
    """Creates directories and files with :data:`MODES`; ``owner`` (uid, gid) chowns what it touches."""

    def __init__(self, owner: tuple[int, int] | None = None):
        self.owner = owner
        self.report = Report()

    def directory(self, path: Path, mode: int) -> None:
        if path.is_dir():
            self._fix(path, mode)
            return
        if path.exists():
            raise CliError(f"{path} exists and is not a directory")
        path.mkdir(parents=True, mode=mode)
        self._own(path, mode)
        self.report.add("created", path, mode)

    def file_mode(self, path: Path, mode: int, created: bool) -> None:
        if created:
            self._own(path, mode)
            self.report.add("created", path, mode)
        else:
            self._fix(path, mode)

    def _fix(self, path: Path, mode: int) -> None:
        """Keep an existing path; tighten its mode if it grants more than ``mode``."""
        current = stat.S_IMODE(path.stat().st_mode)
        if current & ~mode:
            self._own(path, current & mode)
            self.report.add("tightened", path, current & mode)
        else:
            if self.owner is not None:
                os.chown(path, *self.owner)
            self.report.add("kept", path, current)

    def _own(self, path: Path, mode: int) -> None:
        os.chmod(path, mode)  # mkdir's mode is filtered by the umask
        if self.owner is not None:
            os.chown(path, *self.owner)


def provision(loaded: LoadedConfig, owner: tuple[int, int] | None = None, hostname: str | None = None) -> Report:
    """Create everything ``loaded`` needs on disk (idempotent); returns what was done."""
    layout = Layout.of(loaded)
    p = Provisioner(owner)
    p.directory(layout.data_dir, MODES["data_dir"])
    if layout.spool_dir != layout.data_dir:
        p.directory(layout.spool_dir, MODES["spool_dir"])
    if layout.pki_dir is not None:
        provision_pki(p, layout, hostname, overwrite=False)
    if layout.users_file is not None:
        if not layout.users_file.parent.exists():
            p.directory(layout.users_file.parent, MODES["data_dir"])
        created = not layout.users_file.exists()
        if created:
            fd = os.open(layout.users_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODES["users_file"])
            with os.fdopen(fd, "w") as f:
                f.write("# edge OPC UA users: name:role:scrypt hash (edit with 'edge provision user')\n")
        p.file_mode(layout.users_file, MODES["users_file"], created)
    if layout.tokens_file is not None:
        secret_file(p, layout.tokens_file, MODES["tokens_file"],
                    "# edge API tokens: name:role:sha256 of the token (edit with 'edge provision token')\n")
    provision_tls(p, layout, hostname, overwrite=False)
    return p.report


def secret_file(p: Provisioner, path: Path, mode: int, header: str) -> None:
    """An empty secrets file (only its header) with ``mode``, unless it exists (then its mode is checked)."""
    if not path.parent.exists():
        p.directory(path.parent, MODES["data_dir"])
    created = not path.exists()
    if created:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w") as f:
            f.write(header)
    p.file_mode(path, mode, created)


def provision_tls(p: Provisioner, layout: Layout, hostname: str | None, overwrite: bool) -> None:
    """The API's HTTPS certificate and key, when configured and missing (or ``overwrite``)."""
    if layout.tls_cert is None or layout.tls_key is None:
        return
    created = overwrite or not (layout.tls_cert.exists() and layout.tls_key.exists())
    if created:
        for d in {layout.tls_cert.parent, layout.tls_key.parent}:
            if not d.exists():
                p.directory(d, MODES["pki_private"] if d == layout.tls_key.parent else MODES["pki_dir"])
        create_tls_certificate(layout.tls_cert, layout.tls_key, hostname or _certificate_host(layout.api_host))
    p.file_mode(layout.tls_key, MODES["tls_key"], created)
    p.file_mode(layout.tls_cert, MODES["tls_cert"], created)


def provision_pki(p: Provisioner, layout: Layout, hostname: str | None, overwrite: bool) -> None:
    """The PKI folders, and the server certificate when a secure policy needs one."""
    assert layout.pki_dir is not None
    paths = PkiPaths(layout.pki_dir)
    for d in (paths.root, *paths.folders()):
        p.directory(d, MODES["pki_dir"])
    p.directory(paths.key.parent, MODES["pki_private"])
    if not layout.secure and not paths.cert.exists():
        return
    created = overwrite or not paths.cert.exists()
    if created:
        host = hostname or _certificate_host(layout.endpoint_host)
        create_server_certificate(paths.root, layout.application_uri, host, overwrite=overwrite)
    p.file_mode(paths.key, MODES["key"], created)
    p.file_mode(paths.cert, MODES["cert"], created)


def _certificate_host(endpoint_host: str) -> str:
    """The endpoint's host unless it is a wildcard address; then this machine's name."""
    return endpoint_host if endpoint_host not in ("", "0.0.0.0", "::") else socket.gethostname()


def resolve_owner(name: str | None) -> tuple[int, int] | None:
    if name is None:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise CliError(f"--owner: no user named {name!r} on this machine") from None
    return entry.pw_uid, entry.pw_gid


def read_password(password_file: str | None) -> str:
    """The first line of ``password_file``, or of standard input (no echo when it is a terminal)."""
    if password_file is not None:
        try:
            lines = Path(password_file).read_text().splitlines()
        except OSError as exc:
            raise CliError(f"--password-file: cannot read {password_file}: {exc.strerror}") from None
    elif sys.stdin.isatty():
        import getpass

        lines = [getpass.getpass("password: ")]
    else:
        lines = sys.stdin.read().splitlines()
    if not lines or not lines[0]:
        raise CliError("no password given (first line of --password-file or of standard input)")
    return lines[0]


def run(args: argparse.Namespace) -> int:
    words = list(args.words)
    action = words.pop(0) if words[0] in ACTIONS else "all"
    wanted = {"all": 1, "certs": 1, "user": 2, "trust": 2, "token": 1 if args.list else 2}[action]
    if len(words) != wanted:
        shapes = {"all": "CONFIG", "certs": "CONFIG", "user": "CONFIG NAME", "trust": "CONFIG CERT",
                  "token": "CONFIG --list" if args.list else "CONFIG NAME"}
        raise CliError(f"edge provision {'' if action == 'all' else action + ' '}takes {shapes[action]}, "
                       f"got {len(words)} argument(s): {' '.join(words) or '(none)'}", 2)
    loaded = load_config(words[0])
    owner = resolve_owner(args.owner)
    layout = Layout.of(loaded)
    if action == "all":
        report = provision(loaded, owner, args.hostname)
    elif action == "certs":
        if layout.pki_dir is None and layout.tls_cert is None:
            raise CliError("the configuration has no outputs.opcua.pki_dir and no api.tls_cert_file: nothing to create")
        p = Provisioner(owner)
        if layout.pki_dir is not None:
            provision_pki(p, layout, args.hostname, overwrite=args.overwrite)
        provision_tls(p, layout, args.hostname, overwrite=args.overwrite)
        report = p.report
    elif action == "token":
        report = _token(layout, owner, words[1:], args)
    elif action == "user":
        report = _add_user(layout, owner, words[1], args.role, args.password_file)
    else:
        if layout.pki_dir is None:
            raise CliError("the configuration has no outputs.opcua.pki_dir: no trust list")
        try:
            target = trust_client_certificate(layout.pki_dir, words[1])
        except (FileNotFoundError, ValueError) as exc:
            raise CliError(str(exc)) from None
        report = Report()
        report.add("trusted", target)
    for line in report.lines:
        print(line)
    return 0


def _token(layout: Layout, owner: tuple[int, int] | None, names: list[str], args: argparse.Namespace) -> Report:
    """``edge provision token``: add (prints the token once), ``--list`` or ``--revoke``."""
    if layout.tokens_file is None:
        raise CliError("the configuration has no api.tokens_file: set it, then add tokens")
    report = Report()
    try:
        if args.list:
            for entry in list_tokens(layout.tokens_file):
                report.lines.append(f"{entry.name:<24} {entry.role.value}")
            if not report.lines:
                report.lines.append(f"no tokens in {layout.tokens_file}")
            return report
        if args.revoke:
            if not revoke_token(layout.tokens_file, names[0]):
                raise CliError(f"no token named {names[0]!r} in {layout.tokens_file}")
            report.add("revoked", Path(names[0]))
            return report
        if args.role is None:
            raise CliError("edge provision token needs --role viewer or --role operator", 2)
        existed = layout.tokens_file.exists()
        token = add_token(layout.tokens_file, names[0], args.role)
    except TokensFileError as exc:
        raise CliError(str(exc)) from None
    p = Provisioner(owner)
    p.file_mode(layout.tokens_file, MODES["tokens_file"], created=not existed)
    print(f"token for {names[0]} ({args.role}), shown once; send it as 'Authorization: Bearer <token>':",
          file=sys.stderr)
    print(token)
    return Report()


def _add_user(layout: Layout, owner: tuple[int, int] | None, name: str, role: str | None,
              password_file: str | None) -> Report:
    if layout.users_file is None:
        raise CliError("the configuration has no outputs.opcua.users_file: set it, then add users")
    if role is None:
        raise CliError("edge provision user needs --role viewer or --role operator", 2)
    password = read_password(password_file)
    existed = layout.users_file.exists()
    try:
        add_user(layout.users_file, name, role, password)
    except UsersFileError as exc:
        raise CliError(str(exc)) from None
    p = Provisioner(owner)
    p.file_mode(layout.users_file, MODES["users_file"], created=not existed)
    p.report.add("user", Path(f"{name} ({role})"))
    return p.report
