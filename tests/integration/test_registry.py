from floodlight.kafka import make_producer
from floodlight.registry import RegistryView, new_stream_record, publish_stream
from floodlight.settings import Settings


def test_registry_view_reads_to_end_and_follows(isolated: Settings) -> None:
    producer = make_producer(isolated)
    publish_stream(producer, isolated, new_stream_record("early", "Early"))
    view = RegistryView(isolated).start()
    try:
        assert view.wait_caught_up(30)
        assert view.get("early")["title"] == "Early"
        publish_stream(producer, isolated, new_stream_record("late", "Late", latency_mode="LOW"))
        assert view.wait_for(lambda r: r is not None and r["latency_mode"] == "LOW", "late", 15)
    finally:
        view.stop()


def test_new_stream_record_validates_id() -> None:
    import pytest

    with pytest.raises(ValueError):
        new_stream_record("../etc", "x")
