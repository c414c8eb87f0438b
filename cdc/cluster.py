"""The embedded Kafka: librdkafka's mock cluster, in this process, on a loopback port.

It speaks the real Kafka protocol, so the bridge's consumer code is the production code;
other clients, even in other processes, connect to `bootstrap_servers`. It lives as long as
the handle that created it: messages and committed offsets are kept in memory only.
"""

from __future__ import annotations

from confluent_kafka import Producer

from cdc.errors import CdcError


class MockCluster:
    def __init__(self, brokers: int = 1) -> None:
        self._handle = Producer({"test.mock.num.brokers": brokers, "log_level": 3})
        metadata = self._handle.list_topics(timeout=10)
        if not metadata.brokers:
            raise CdcError("the mock Kafka cluster did not start")
        broker = next(iter(metadata.brokers.values()))
        self.bootstrap_servers = f"{broker.host}:{broker.port}"

    def producer(self) -> Producer:
        return Producer({"bootstrap.servers": self.bootstrap_servers, "linger.ms": 2})
