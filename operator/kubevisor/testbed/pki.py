"""Throwaway certificate authorities for the testbed and the tests: the control plane's CA
and front-proxy CA (`testbed.controlplane`), and the console, image-server and migration
TLS tests (`tests/console/pki.py`).

A CA is two files in a directory, `STEM.crt` and `STEM.key`, so another process can load it
and issue more (`ControlPlane.credentials` does). Keys are P-256; certificates are valid
from five minutes ago for seven days.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True)
class Ca:
    """A CA whose certificate and key are files in `directory`; `issue` signs with it."""

    directory: Path
    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path, name: str, *, stem: str = "ca") -> Ca:
        """A new self-signed CA called `name`, written to `directory`/STEM.crt and .key."""
        directory.mkdir(parents=True, exist_ok=True)
        ca = cls.at(directory, stem=stem)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(name)
        cert = (
            _builder(subject, subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .sign(key, hashes.SHA256())
        )
        write_key(ca.key, key)
        ca.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return ca

    @classmethod
    def at(cls, directory: Path, *, stem: str = "ca") -> Ca:
        """The CA `create` wrote to `directory` under `stem` (files are read when issuing)."""
        return cls(directory, directory / f"{stem}.crt", directory / f"{stem}.key")

    def issue(
        self,
        name: str,
        *,
        server: bool = False,
        hosts: Sequence[str] = (),
        groups: Sequence[str] = (),
        common_name: str | None = None,
    ) -> tuple[Path, Path]:
        """A certificate and key signed by this CA, written to NAME.crt and NAME.key: a
        serving one for `hosts` (DNS names or IP addresses), or a client one whose
        Organizations are `groups` (Kubernetes reads them as groups). The CommonName is
        `common_name`, else `name`."""
        ca_key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
            + [x509.NameAttribute(NameOID.COMMON_NAME, common_name or name)]
        )
        builder = _builder(subject, ca_cert.subject, key.public_key())
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(h) for h in dict.fromkeys(hosts)]),
                critical=False,
            )
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        cert = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False).sign(
            ca_key, hashes.SHA256()
        )
        cert_path, key_path = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path


def write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    """Write a private key as unencrypted PKCS#8 PEM, readable by its owner only."""
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
    )
