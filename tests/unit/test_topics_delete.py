from __future__ import annotations

import pytest

from floodlight.settings import Settings
from floodlight.topics import delete_prefixed_topics


def test_deleting_without_a_prefix_is_refused_before_any_broker_call() -> None:
    # an empty prefix matches every topic on the cluster; no broker is reachable at this address either
    with pytest.raises(ValueError, match="without a topic prefix"):
        delete_prefixed_topics(Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix=""))
