"""rx_pgmq: consume PGMQ queues as RxPY observables, with demand, backpressure and ack policies."""

from rx_pgmq._consumer._multi import MultiQueueSource, read_queues
from rx_pgmq._consumer._source import ControlledSource, QueueSource, read_queue
from rx_pgmq._core._stats import ConsumerStats
from rx_pgmq._pg._install import install_pgmq
from rx_pgmq._pg._listener import Listener, ListenerEvent
from rx_pgmq._values._options import LongPoll, ReadOptions
from rx_pgmq._values._outcome import Outcome, Settled, failed, succeeded
from rx_pgmq._values._records import (
    NotifyThrottle,
    Partitioning,
    QueueDetails,
    QueueKind,
    RouteMatch,
    TopicBinding,
)
from rx_pgmq.client import PGMQ
from rx_pgmq.message import Message, QueueInfo, QueueMetrics

__version__ = "0.1.0"

__all__ = [
    "PGMQ",
    "ConsumerStats",
    "ControlledSource",
    "Listener",
    "ListenerEvent",
    "LongPoll",
    "Message",
    "MultiQueueSource",
    "NotifyThrottle",
    "Outcome",
    "Partitioning",
    "QueueDetails",
    "QueueInfo",
    "QueueKind",
    "QueueMetrics",
    "QueueSource",
    "ReadOptions",
    "RouteMatch",
    "Settled",
    "TopicBinding",
    "__version__",
    "failed",
    "install_pgmq",
    "read_queue",
    "read_queues",
    "succeeded",
]
