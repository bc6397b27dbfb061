"""Helpers for tests that talk to the real RabbitMQ: look at queues as an operator would."""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import shlex
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pika

from domain_event_broker import Retry, Subscriber

#: The broker the suite runs against: the machine's RabbitMQ unless CI points the
#: suite at another one (``.ci/run`` runs it again on a RabbitMQ 4.x node so).
AMQP_PORT = int(os.environ.get("DEB_TEST_AMQP_PORT", "5672"))
#: How to run rabbitmqctl against that broker (a command line, split as a shell would).
RABBITMQCTL = shlex.split(os.environ.get("DEB_TEST_RABBITMQCTL", "rabbitmqctl"))


def broker_at(vhost: str = "%2F", password: str = "guest") -> str:
    """The URL of the suite's broker for ``vhost`` (as a URL path segment)."""
    return f"amqp://guest:{password}@127.0.0.1:{AMQP_PORT}/{vhost}"


def free_port() -> int:
    """A TCP port nothing listens on now (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Return once ``condition()`` holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(0.05)


def http_get(port: int, path: str) -> tuple[int, str]:
    """Status and body of ``GET http://127.0.0.1:<port><path>``; ``(0, "")`` if not listening."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def send_to_queue(broker_url: str, queue: str, body: bytes, headers: dict[str, Any]) -> None:
    """Publish straight into ``queue`` through the default exchange, as any client can."""
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", queue, body, pika.BasicProperties(headers=headers))


class RetryWithoutDelay(Retry):
    """A careless handler's Retry subclass: it never calls ``Retry.__init__``."""

    def __init__(self, why: str) -> None:
        Exception.__init__(self, why)


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(
        [*RABBITMQCTL, *args], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


def delete_queues(broker_url: str, *queues: str) -> None:
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)


def queue_depth(broker_url: str, queue: str) -> int:
    """Ready messages in ``queue`` (unacked ones return when their consumer is gone)."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        result = connection.channel().queue_declare(queue=queue, passive=True)
        return int(result.method.message_count)
    finally:
        connection.close()


def get_all(broker_url: str, queue: str) -> list[tuple[Any, Any, bytes]]:
    """Take every message out of ``queue`` (acked)."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    messages = []
    try:
        channel = connection.channel()
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return messages
            messages.append((method, properties, body))
    finally:
        connection.close()


def consume_until(
    subscriber: Subscriber,
    done: Callable[[], bool],
    timeout: float = 20.0,
    settle: float = 0.0,
) -> float:
    """Run ``subscriber`` in a thread until ``done()`` (then ``settle`` s more); return seconds.

    Fails the test when ``done()`` is not reached within ``timeout``.
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            subscriber.start_consuming(timeout=timeout + settle + 5)
        except BaseException as error:
            errors.append(error)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while not done() and time.monotonic() - started < timeout and thread.is_alive():
        time.sleep(0.02)
    reached = done()
    elapsed = time.monotonic() - started
    time.sleep(settle)
    subscriber.stop_consuming()
    thread.join(30)
    assert not thread.is_alive(), "subscriber did not stop"
    if errors:
        raise errors[0]
    assert reached, f"condition not reached within {timeout} s"
    return elapsed


class TcpProxy:
    """A TCP proxy on loopback in front of RabbitMQ, to cut one client's connection.

    ``stop()`` closes every proxied connection and stops listening (the broker
    looks unreachable to clients of the proxy only); ``start()`` listens again.
    """

    def __init__(self, target_port: int = AMQP_PORT) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: Any = None
        self._sockets: list[Any] = []
        self._lock = threading.Lock()
        self._accepted = 0  # connections so far, numbered from 1

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # close() alone does not wake a thread blocked in accept(); shutdown() does.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: Any) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, upstream]
                self._accepted += 1
                number = self._accepted
            withheld = functools.partial(self._withholds_replies, number)
            for source, sink, drop in ((client, upstream, _never), (upstream, client, withheld)):
                threading.Thread(target=self._pipe, args=(source, sink, drop), daemon=True).start()

    def _withholds_replies(self, number: int) -> bool:
        """Whether what the broker sends to connection ``number`` is dropped now."""
        return False

    @staticmethod
    def _pipe(source: Any, sink: Any, drop: Callable[[], bool]) -> None:
        try:
            while data := source.recv(65536):
                if not drop():
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            # shutdown() first: close() leaves the connection open while the other
            # pipe thread is still blocked in recv() on the same socket.
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def _never() -> bool:
    return False


class FreezingProxy(TcpProxy):
    """A proxy that can stop passing the broker's frames to the connections it has now.

    The broker still takes what the client sends, and newer connections work:
    as a broker that keeps a publisher's confirms to itself would look.
    """

    def __init__(self) -> None:
        super().__init__()
        self._frozen_below = 0

    def freeze(self) -> None:
        self._frozen_below = self._accepted

    def _withholds_replies(self, number: int) -> bool:
        return number <= self._frozen_below


def management(vhost: str, path: str) -> Any:
    """GET ``/api/<path>`` of the broker's management API; ``{vhost}`` in ``path`` quoted."""
    token = base64.b64encode(b"guest:guest").decode()
    quoted = urllib.parse.quote(vhost, safe="")
    request = urllib.request.Request(
        f"http://127.0.0.1:{AMQP_PORT + 10000}/api/{path.format(vhost=quoted)}",
        headers={"Authorization": f"Basic {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.load(reply)


def delete_subscriber_topology(broker_url: str, *names: str) -> None:
    """Delete the queues and exchanges of the subscribers ``names``."""
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        for subscriber_name in names:
            for queue in (subscriber_name, f"{subscriber_name}-dl"):
                channel.queue_delete(queue)
            for exchange in (
                f"{subscriber_name}-dlx",
                f"{subscriber_name}-retry",
                f"{subscriber_name}-partitions",
                f"{subscriber_name}-members",
            ):
                channel.exchange_delete(exchange)
