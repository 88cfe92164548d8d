"""Throw-away certificates for a TLS-only local node (`gridbus dev up --tls`, the TLS tests).

One CA made here (trustme), a server certificate for 127.0.0.1 and localhost, and a client
certificate per name (its common name is the broker user of a certificate login,
``ssl_cert_login_from = common_name``).  Written into one folder that only its owner may enter,
each file owner-only: the keys are real keys, even if the CA is a toy.  Never for production.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SERVER_HOSTS = ("127.0.0.1", "localhost")
CLIENTS = ("gridbus",)
DEV_STACK_CLIENTS = ("gridbus", "adms")  # the bus's processes, and the ADMS stand-in


@dataclass(frozen=True)
class TlsFiles:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:  # kept (owner-only) so that more certificates can be issued later
        return self.folder / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    def client_cert(self, name: str) -> Path:
        return self.folder / f"client-{name}.pem"

    def client_key(self, name: str) -> Path:
        return self.folder / f"client-{name}.key"

    def client_env(self, name: str = CLIENTS[0]) -> dict[str, str]:
        """The settings a gridbus process needs to connect as client ``name`` (bus/messaging/tls.py)."""
        return {"GRIDBUS_TLS_CA": str(self.ca), "GRIDBUS_TLS_CERT": str(self.client_cert(name)),
                "GRIDBUS_TLS_KEY": str(self.client_key(name))}

    def complete(self, clients=CLIENTS) -> bool:
        paths = [self.ca, self.ca_key, self.server_cert, self.server_key,
                 *(p for c in clients for p in (self.client_cert(c), self.client_key(c)))]
        return all(p.is_file() for p in paths)


def _write(path: Path, data: bytes) -> None:
    # created owner-only, not chmod-ed after: there is no moment a key is readable by others
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    path.chmod(0o600)


def make(folder: Path, clients=CLIENTS, server_hosts=SERVER_HOSTS, keep: bool = True) -> TlsFiles:
    """A CA, a server certificate for ``server_hosts`` and a client certificate (CN = name) for
    each of ``clients``, in ``folder``.  With ``keep``, files made before are used again (the
    node's configuration names them), unless one is missing; then all are made anew."""
    import trustme

    files = TlsFiles(folder)
    if keep and files.complete(clients):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca = trustme.CA(organization_name="gridbus dev (throw-away)")
    server = ca.issue_cert(*server_hosts, common_name=server_hosts[0])
    _write(files.ca, ca.cert_pem.bytes())
    _write(files.ca_key, ca.private_key_pem.bytes())
    _write(files.server_cert, b"".join(pem.bytes() for pem in server.cert_chain_pems))
    _write(files.server_key, server.private_key_pem.bytes())
    for name in clients:
        # a name in the alternative names too: trustme writes the extension empty (and critical)
        # otherwise, and Erlang's TLS refuses such a certificate as unsupported
        client = ca.issue_cert(f"{name}.client.invalid", common_name=name)
        _write(files.client_cert(name), b"".join(pem.bytes() for pem in client.cert_chain_pems))
        _write(files.client_key(name), client.private_key_pem.bytes())
    return files


def other_ca_bundle(path: Path) -> Path:
    """The certificate of a CA that signed nothing here: a bundle every server of ours fails against."""
    import trustme

    _write(path, trustme.CA(organization_name="not the gridbus dev CA").cert_pem.bytes())
    return path


def issue_server_cert(files: TlsFiles, hosts: tuple[str, ...], name: str) -> tuple[Path, Path]:
    """Another server certificate of the same CA, for ``hosts`` (a test's certificate for a host
    the client does not ask for): (certificate chain, key) as ``<name>.pem`` and ``<name>.key``."""
    import trustme

    ca = trustme.CA.from_pem(files.ca.read_bytes(), files.ca_key.read_bytes())
    leaf = ca.issue_cert(*hosts, common_name=hosts[0])
    cert, key = files.folder / f"{name}.pem", files.folder / f"{name}.key"
    _write(cert, b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    _write(key, leaf.private_key_pem.bytes())
    return cert, key


def expired_ca_bundle(path: Path) -> Path:
    """A CA certificate that expired yesterday (the tests' "expired GRIDBUS_TLS_CA")."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired gridbus test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    _write(path, cert.public_bytes(serialization.Encoding.PEM))
    return path


def dev_stack_env(files: TlsFiles, amqp_port: int, management_port: int) -> dict[str, str]:
    """What `dev up --tls` writes into dev.env: the node's TLS addresses, the bus's client
    certificate, and the ADMS stand-in's own (it reads its outage queue over TLS as `adms`)."""
    return {"GRIDBUS_BROKER_URL": f"amqps://guest:guest@127.0.0.1:{amqp_port}//",
            "GRIDBUS_MANAGEMENT_URL": f"https://guest:guest@127.0.0.1:{management_port}",
            **files.client_env("gridbus"),
            "ADMS_AMQP_CA": str(files.ca), "ADMS_AMQP_CERT": str(files.client_cert("adms")),
            "ADMS_AMQP_KEY": str(files.client_key("adms"))}


def as_tls_url(url: str) -> str:
    """``amqp://...`` as ``amqps://...`` (the same node, user and vhost, over TLS)."""
    return "amqps://" + url.split("://", 1)[1] if url.startswith("amqp://") else url
