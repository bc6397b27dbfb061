"""A throw-away single RabbitMQ node on 127.0.0.1:5691 (distribution 25691), to restart at will.

Started the way tests/faults/rabbit_cluster.py starts its nodes: the server's own
scripts, a temporary HOME with its own Erlang cookie, so the machine's node is
never touched.
"""

from __future__ import annotations

from pathlib import Path

from faults.rabbit_cluster import Node, RabbitCluster

AMQP_PORT = 5691
DIST_PORT = 25691


class _SingleNode(Node):
    @property
    def name(self) -> str:
        return "debaio@localhost"

    @property
    def amqp_port(self) -> int:
        return AMQP_PORT

    @property
    def dist_port(self) -> int:
        return DIST_PORT

    @property
    def folder(self) -> Path:
        return self.home / "debaio"


class SingleNode(RabbitCluster):
    """One node; ``restart_app()`` stops and starts its RabbitMQ application."""

    def __init__(self, sbin: Path) -> None:
        super().__init__(sbin)
        self.nodes = [_SingleNode(1, self.home)]

    @property
    def node(self) -> Node:
        return self.nodes[0]

    @property
    def url(self) -> str:
        return self.node.url

    def stop_application(self) -> None:
        self.ctl(self.node, "stop_app")

    def start_application(self) -> None:
        self.ctl(self.node, "start_app")
        self.await_node(self.node)
