"""The TLS material of a sandbox broker's SASL_SSL listener: a CA of its own and a broker certificate
it signed, made with the JDK's keytool (no Python crypto dependency)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kafka_lfs_relay.sandbox.distribution import java_executable
from kafka_lfs_relay.sandbox.process import SandboxError

_VALIDITY_DAYS = "30"


def make_broker_tls(tls: Path, password: str, cluster: str) -> None:
    """Write into ``tls`` a CA (``ca.p12``, ``ca.pem``) and a broker keystore (``broker.p12``, with
    ``broker.pem``) for 127.0.0.1/localhost; both stores use ``password``. ``cluster`` names the
    cluster in errors."""
    tls.mkdir(parents=True, exist_ok=True)
    keytool = _Keytool(cluster, password)
    ca, broker = str(tls / "ca.p12"), str(tls / "broker.p12")
    keytool.keypair(ca, "ca", "CN=kafka-lfs-relay sandbox CA", "-ext", "bc:c")
    keytool.keypair(broker, "broker", "CN=localhost")
    (tls / "ca.pem").write_text(
        keytool.run("-exportcert", "-rfc", "-alias", "ca", "-keystore", ca, "-storepass", password), encoding="ascii"
    )
    csr = keytool.run("-certreq", "-alias", "broker", "-keystore", broker, "-storepass", password)
    signed = keytool.run(
        "-gencert", "-rfc", "-alias", "ca", "-keystore", ca, "-storepass", password,
        "-ext", "SAN=ip:127.0.0.1,dns:localhost", "-validity", _VALIDITY_DAYS,
        stdin=csr,
    )  # fmt: skip
    (tls / "broker.pem").write_text(signed, encoding="ascii")
    keytool.import_cert(broker, "ca", tls / "ca.pem")
    keytool.import_cert(broker, "broker", tls / "broker.pem", "-keypass", password)


class _Keytool:
    """The JDK's keytool, run once per step; a failing step raises :class:`SandboxError` with its stderr."""

    def __init__(self, cluster: str, password: str) -> None:
        self._cluster = cluster
        self._password = password
        self._path = str(Path(java_executable()).with_name("keytool"))

    def run(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run([self._path, *args], input=stdin, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SandboxError(f"cluster {self._cluster}: keytool {args[0]} failed: {proc.stderr.strip()}")
        return proc.stdout

    def keypair(self, store: str, alias: str, dname: str, *extra: str) -> None:
        """A new 2048-bit RSA key pair with a self-signed certificate in the PKCS12 ``store``."""
        pw = self._password
        self.run(
            "-genkeypair", "-alias", alias, "-keystore", store, "-dname", dname, *extra, "-validity", _VALIDITY_DAYS,
            "-storetype", "PKCS12", "-storepass", pw, "-keypass", pw, "-keyalg", "RSA", "-keysize", "2048",
        )  # fmt: skip

    def import_cert(self, store: str, alias: str, cert: Path, *extra: str) -> None:
        """Import the PEM certificate ``cert`` into ``store`` under ``alias``, trusted without a prompt."""
        self.run(
            "-importcert", "-noprompt", "-alias", alias, "-file", str(cert), "-keystore", store,
            "-storepass", self._password, *extra,
        )  # fmt: skip
