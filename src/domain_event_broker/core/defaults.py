"""Every timing default of the library, each defined once, for the sync and asyncio sides alike.

Where the two drivers (pika and aio-pika), the outbox relay or the in-memory
broker need the same number, they read it here, so that they cannot drift.
Names and wire values of the topology are in :mod:`.topology`.
"""

#: Seconds a publish waits for the broker's confirm, riding out reconnects
#: (``settings.PUBLISH_TIMEOUT``, read at each publish, starts as this). Also how
#: long a subscriber waits for the confirm of a retry or dead-letter copy before
#: it takes the connection for lost and reconnects (the original is redelivered).
PUBLISH_TIMEOUT = 30.0

#: Seconds an outbox batch may wait for the broker's confirms; its rows stay
#: locked meanwhile, so it is shorter than a single publish's.
OUTBOX_PUBLISH_TIMEOUT = 10.0

#: Seconds to wait for a TCP connection and for the AMQP handshake, unless the URL says otherwise.
CONNECT_TIMEOUT = 5.0

#: Deliveries RabbitMQ may send to each handler's consumer before they are acked.
PREFETCH_COUNT = 64

#: Threads that run a sync subscriber's handlers. One keeps a subscriber's events in order.
WORKERS = 1

#: Seconds in-flight handlers get to finish after a stop (SIGTERM, stop_consuming()).
SHUTDOWN_GRACE_PERIOD = 30.0

#: Seconds between two housekeeping passes of a consuming subscriber.
HOUSEKEEPING_INTERVAL = 5.0

#: Seconds a connection must last before losing it starts the reconnect backoff afresh.
STABLE_CONNECTION = 10.0

#: Seconds between two WARNINGs while the same outage goes on.
WARNING_INTERVAL = 60.0

#: A subscriber whose retry or dead-letter copies the broker refuses sends the
#: event back to its queue after a pause: this long at first, doubling with each
#: refusal in a row, never longer than :data:`REFUSED_COPY_PAUSE_MAX`.
REFUSED_COPY_PAUSE = 1.0  # at most one redelivery per event per second while refused
REFUSED_COPY_PAUSE_MAX = 15.0

#: An outbox row the broker refused is tried again after this many seconds,
#: doubling up to :data:`OUTBOX_MAX_RETRY_DELAY`.
OUTBOX_RETRY_DELAY = 10.0
OUTBOX_MAX_RETRY_DELAY = 900.0

#: Seconds a command waits for an operator's answer (replay --interactive, delete)
#: before it leaves things as they are (and before RabbitMQ would drop an idle connection).
ANSWER_TIMEOUT = 30.0
