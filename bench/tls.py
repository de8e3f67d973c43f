"""The bench's own certificate authority and a server certificate for 127.0.0.1 / localhost, made with
`cryptography` (a dependency already), under bench/.work/tls/. Gateways trust the CA the way a deployment
trusts a private CA: SSL_CERT_FILE (Python: audiorouter, LiteLLM) and NODE_EXTRA_CA_CERTS (Portkey).
Certificate verification is never turned off anywhere in the bench.

    from tls import bench_certs
    c = bench_certs()          # c.ca, c.cert, c.key: paths
    c.env()                    # the environment variables that make a process trust c.ca
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from procs import WORK

TLS_DIR = WORK / "tls"


@dataclass
class BenchCerts:
    ca: Path
    cert: Path
    key: Path

    def env(self) -> dict[str, str]:
        return {"SSL_CERT_FILE": str(self.ca), "NODE_EXTRA_CA_CERTS": str(self.ca),
                "REQUESTS_CA_BUNDLE": str(self.ca)}


def bench_certs(directory: Path = TLS_DIR) -> BenchCerts:
    """Made once, reused while valid for another day."""
    out = BenchCerts(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    if out.ca.exists() and out.cert.exists() and out.key.exists() and _valid(out.cert):
        return out
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "audiorouter bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    out.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    out.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    out.key.chmod(0o600)
    return out


def _valid(cert: Path) -> bool:
    from cryptography import x509
    try:
        c = x509.load_pem_x509_certificate(cert.read_bytes())
    except ValueError:
        return False
    return c.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
