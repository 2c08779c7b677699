"""Hole 8 of issue 13 against a reader that is not ours: Apache Avro's Java `BinaryMessageDecoder` (from
Maven Central, `avro_interop/pom.xml`) decodes the records `schemas/codec.py` writes, and our codec reads
what Java's `BinaryMessageEncoder` writes. Before the fix Java refused every record: the fingerprint was
written in the wrong byte order, so it matched no schema Java knew."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from schemas import codec
from tests.support import sample_records

HERE = Path(__file__).parent / "avro_interop"
NAMES = list(codec.RECORD_NAMES)


@pytest.fixture(scope="module")
def avro_classpath(tmp_path_factory: pytest.TempPathFactory) -> str:
    if not (shutil.which("mvn") and shutil.which("java")):
        pytest.skip("needs mvn and java (the local Kafka stack needs them too)")
    out = tmp_path_factory.mktemp("avro") / "classpath.txt"
    res = subprocess.run(["mvn", "-q", "-B", "-f", str(HERE / "pom.xml"), "dependency:build-classpath",
                          f"-Dmdep.outputFile={out}"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"mvn could not fetch Apache Avro:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return out.read_text().strip()


def test_java_avro_reads_our_records_and_we_read_its(avro_classpath: str, tmp_path: Path) -> None:
    records = sample_records()
    for name in NAMES:
        shutil.copy(codec.SCHEMA_DIR / f"{name}.avsc", tmp_path / f"{name}.avsc")
        (tmp_path / f"{name}.bin").write_bytes(codec.encode(name, records[name]))
    res = subprocess.run(["java", "-cp", avro_classpath, str(HERE / "Interop.java"), str(tmp_path), *NAMES],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    printed = dict(line.split("\t", 1) for line in res.stdout.splitlines() if "\t" in line)
    assert set(printed) == set(NAMES)
    for name in NAMES:
        if "stream_id" in records[name]:
            assert f'"stream_id": "{records[name]["stream_id"]}"' in printed[name], printed[name]
        java_bytes = (tmp_path / f"{name}.java.bin").read_bytes()
        assert java_bytes[:10] == codec.encode(name, records[name])[:10]  # same marker and fingerprint bytes
        assert codec.decode(java_bytes, expect=name) == records[name]
