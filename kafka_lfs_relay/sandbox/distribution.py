"""Where the Apache Kafka jars come from: ``KAFKA_HOME``, or Maven Central resolved into a cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kafka_lfs_relay.sandbox.process import SandboxError

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
# Kafka's POM names no SLF4J binding (the distribution adds one by hand), so without this the
# broker would log nothing at all and a failed start could not be explained.
_EXTRA_RUNTIME = ("org.apache.logging.log4j:log4j-slf4j-impl:2.24.3",)
# Artifacts that only the benchmarks need; resolved on demand, into their own folder.
TOOLS_ARTIFACTS = (
    f"org.apache.kafka:kafka-tools:{KAFKA_VERSION}",
    f"org.apache.kafka:connect-mirror:{KAFKA_VERSION}",
    f"org.apache.kafka:connect-runtime:{KAFKA_VERSION}",
)


def cache_root() -> Path:
    """The folder that holds resolved jars: ``$KAFKA_LFS_RELAY_CACHE`` or ``~/.cache/kafka-lfs-relay``."""
    env = os.environ.get("KAFKA_LFS_RELAY_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kafka-lfs-relay"


@dataclass(frozen=True)
class KafkaDistribution:
    """A set of jars that can run a KRaft broker: the classpath and the version it is."""

    version: str
    libs: tuple[Path, ...]
    source: str

    @property
    def classpath(self) -> str:
        """The JVM classpath string."""
        return os.pathsep.join(str(p) for p in self.libs)


def java_executable() -> str:
    """The ``java`` to run brokers with: ``$JAVA_HOME/bin/java`` or ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise SandboxError(
            "Java was not found: install a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`) "
            "or set JAVA_HOME."
        )
    return found


def _from_kafka_home(home: Path) -> KafkaDistribution:
    libs = tuple(sorted((home / "libs").glob("*.jar")))
    if not any(p.name.startswith("kafka_") for p in libs):
        raise SandboxError(f"KAFKA_HOME={home} has no libs/kafka_*.jar: point it at an Apache Kafka distribution.")
    return KafkaDistribution(version="KAFKA_HOME", libs=libs, source=str(home))


def _pom(artifacts: Sequence[str]) -> str:
    deps = []
    for coord in artifacts:
        group, artifact, version = coord.split(":")
        deps.append(
            f"<dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
            f"<version>{version}</version></dependency>"
        )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>kafka-lfs-relay</groupId><artifactId>sandbox-resolve</artifactId><version>1</version>"
        f"<dependencies>{''.join(deps)}</dependencies></project>"
    )


def resolve_with_maven(artifacts: Sequence[str], dest: Path) -> tuple[Path, ...]:
    """Copy ``artifacts`` and their runtime dependencies from Maven Central into ``dest``.

    The copy goes to a sibling folder first and is renamed into place, so an interrupted
    download never leaves a half-filled folder that a later run would take as complete.
    """
    if dest.is_dir() and any(dest.glob("*.jar")):
        return tuple(sorted(dest.glob("*.jar")))
    mvn = shutil.which("mvn")
    if not mvn:
        raise SandboxError(
            "Maven was not found: install it (e.g. `apt-get install maven`) so the sandbox can fetch Kafka "
            "from Maven Central, or set KAFKA_HOME to an Apache Kafka distribution."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kfr-mvn-", dir=dest.parent) as tmp:
        work = Path(tmp)
        (work / "pom.xml").write_text(_pom(artifacts), encoding="utf-8")
        staging = work / "libs"
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(work / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not any(staging.glob("*.jar")):
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise SandboxError(f"Maven could not resolve {', '.join(artifacts)} from Maven Central:\n{tail}")
        staging.rename(dest)
    return tuple(sorted(dest.glob("*.jar")))


def kafka_distribution() -> KafkaDistribution:
    """The broker jars: from ``KAFKA_HOME`` if set, else resolved (once) from Maven Central."""
    home = os.environ.get("KAFKA_HOME")
    if home:
        return _from_kafka_home(Path(home))
    dest = cache_root() / f"kafka-{KAFKA_VERSION}" / "libs"
    artifacts = (f"org.apache.kafka:kafka_{SCALA_VERSION}:{KAFKA_VERSION}", *_EXTRA_RUNTIME)
    return KafkaDistribution(version=KAFKA_VERSION, libs=resolve_with_maven(artifacts, dest), source=str(dest))


def tools_classpath() -> str:
    """Classpath of Kafka's perf tools and MirrorMaker 2 (same version), for the benchmarks."""
    home = os.environ.get("KAFKA_HOME")
    if home:
        return _from_kafka_home(Path(home)).classpath
    dest = cache_root() / f"kafka-{KAFKA_VERSION}" / "tools-libs"
    libs = resolve_with_maven((*TOOLS_ARTIFACTS, *_EXTRA_RUNTIME), dest)
    return os.pathsep.join(str(p) for p in libs)
