"""compose/ cannot run here (no Docker engine), so pin what can drift: roles and settings names."""

from pathlib import Path

import yaml

from floodlight.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "compose" / "docker-compose.yml"
ROLES = {"ingest", "encoder", "packager", "qoe", "api"}


def _doc() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_every_role_has_a_service() -> None:
    services = _doc()["services"]
    commands = {s["command"][0] for s in services.values() if s.get("image") == "floodlight:latest"}
    assert ROLES <= commands
    assert {"kafka-1", "kafka-2", "kafka-3", "clickhouse", "minio", "edge"} <= set(services)


def test_kafka_is_three_kraft_nodes_with_replicated_topics() -> None:
    """The same cluster `./run stack up --nodes 3` starts: three combined nodes, one 3-voter quorum, one
    cluster id, replication 3 with min ISR 2 for our topics and the internal ones; roles bootstrap from all."""
    doc = _doc()
    brokers = {name: svc["environment"] for name, svc in doc["services"].items() if name.startswith("kafka-")}
    assert len(brokers) == 3
    assert {env["KAFKA_NODE_ID"] for env in brokers.values()} == {1, 2, 3}
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in brokers.values()}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert len({env["CLUSTER_ID"] for env in brokers.values()}) == 1
    for name, env in brokers.items():
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == 3 and env["KAFKA_MIN_INSYNC_REPLICAS"] == 2
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 3
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 3
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == 2
    roles = [svc for svc in doc["services"].values() if svc.get("image") == "floodlight:latest"]
    for svc in roles:
        assert svc["environment"]["FLOODLIGHT_KAFKA_BOOTSTRAP"] == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
        assert {"kafka-1", "kafka-2", "kafka-3"} <= set(svc["depends_on"])


def test_every_floodlight_variable_is_a_setting() -> None:
    known = {f"FLOODLIGHT_{name.upper()}" for name in Settings.model_fields}
    used = set()
    for svc in _doc()["services"].values():
        env = svc.get("environment") or {}
        used |= {k for k in env if k.startswith("FLOODLIGHT_")}
    assert used, "compose sets no FLOODLIGHT_ variable"
    assert used <= known, f"unknown settings in compose: {sorted(used - known)}"


def test_readme_documents_every_setting() -> None:
    readme = (COMPOSE.parents[1] / "README.md").read_text()
    missing = [f"FLOODLIGHT_{n.upper()}" for n in Settings.model_fields if f"FLOODLIGHT_{n.upper()}" not in readme]
    assert not missing, f"README settings table lacks {missing}"
