"""A throw-away 3-node RabbitMQ cluster on loopback, for fault-injection tests.

The nodes ``deb1@localhost`` .. ``deb3@localhost`` listen for AMQP on
127.0.0.1:5681-5683 and for Erlang distribution on 25681-25683. Everything they
write (data, logs, config, pid files, the Erlang cookie) lives under one
temporary folder that is their ``HOME``, so the machine's own RabbitMQ node
(``rabbit@localhost`` on 5672) and its cookie are never touched.

The server's own scripts in ``.../rabbitmq_server-X/sbin`` are called, not the
Debian wrappers in /usr/sbin: those switch to the ``rabbitmq`` user and drop the
``RABBITMQ_*`` variables that give each node its name, ports and folders.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

NODE_COUNT = 3
AMQP_PORT_BASE = 5680
DIST_PORT_BASE = 25680
START_TIMEOUT = 120.0  # the machine is shared: starting may be slow under load
CLI_TIMEOUT = 60.0


def find_sbin() -> Path | None:
    """The server's own script folder (``$RABBITMQ_SBIN`` wins), or None."""
    configured = os.environ.get("RABBITMQ_SBIN")
    if configured:
        return Path(configured)
    found = sorted(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin"))
    return Path(found[-1]) if found else None


@dataclass
class Node:
    index: int
    home: Path
    amqp_port_base: int = AMQP_PORT_BASE
    dist_port_base: int = DIST_PORT_BASE
    prefix: str = "deb"  # node names must differ between clusters sharing epmd

    @property
    def name(self) -> str:
        return f"{self.prefix}{self.index}@localhost"

    @property
    def amqp_port(self) -> int:
        return self.amqp_port_base + self.index

    @property
    def dist_port(self) -> int:
        return self.dist_port_base + self.index

    @property
    def folder(self) -> Path:
        return self.home / f"{self.prefix}{self.index}"

    @property
    def pid_file(self) -> Path:
        return self.folder / "rabbitmq.pid"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"


class RabbitCluster:
    """Start, inspect, hurt and tear down the cluster; see the module docstring."""

    def __init__(
        self,
        sbin: Path,
        *,
        node_count: int = NODE_COUNT,
        amqp_port_base: int = AMQP_PORT_BASE,
        dist_port_base: int = DIST_PORT_BASE,
        node_prefix: str = "deb",
        rabbit_settings: dict[str, int] | None = None,
    ) -> None:
        """``rabbit_settings``: extra ``rabbit`` application settings (advanced.config)."""
        self.sbin = sbin
        self.home = Path(tempfile.mkdtemp(prefix="deb-cluster-"))
        self.nodes = [
            Node(index, self.home, amqp_port_base, dist_port_base, node_prefix)
            for index in range(1, node_count + 1)
        ]
        self.rabbit_settings = dict(rabbit_settings or {})
        self._servers: dict[str, subprocess.Popen[bytes]] = {}
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)
        # An empty env file instead of /etc/rabbitmq/rabbitmq-env.conf (the main node's).
        (self.home / "rabbitmq-env.conf").write_text("")
        # No plugins: no management or prometheus listeners, faster start, less memory.
        (self.home / "enabled_plugins").write_text("[].\n")

    # Environment and commands ---------------------------------------------------------
    def env(self, node: Node | None = None) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("RABBITMQ_")}
        env.update(
            HOME=str(self.home),  # the Erlang cookie of this cluster, for nodes and CLI
            RABBITMQ_CONF_ENV_FILE=str(self.home / "rabbitmq-env.conf"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        if node is not None:
            env.update(
                RABBITMQ_NODENAME=node.name,
                RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                RABBITMQ_NODE_PORT=str(node.amqp_port),
                RABBITMQ_DIST_PORT=str(node.dist_port),
                RABBITMQ_MNESIA_BASE=str(node.folder / "mnesia"),
                RABBITMQ_LOG_BASE=str(node.folder / "log"),
                RABBITMQ_CONFIG_FILE=str(node.folder / "rabbitmq.conf"),
                RABBITMQ_ADVANCED_CONFIG_FILE=str(node.folder / "advanced.config"),
                RABBITMQ_ENABLED_PLUGINS_FILE=str(self.home / "enabled_plugins"),
                RABBITMQ_PID_FILE=str(node.pid_file),
                RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            )
        return env

    def cli(
        self, tool: str, node: Node, *args: str, timeout: float = CLI_TIMEOUT, check: bool = True
    ) -> str:
        """Run ``sbin/<tool> -n <node> args...`` against this cluster; return its output."""
        result = subprocess.run(
            [str(self.sbin / tool), "-n", node.name, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{tool} -n {node.name} {' '.join(args)} failed ({result.returncode}): "
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout

    def ctl(self, node: Node, *args: str, timeout: float = CLI_TIMEOUT) -> str:
        return self.cli("rabbitmqctl", node, *args, timeout=timeout)

    def ctl_json(self, node: Node, *args: str, settle: float = 0.0) -> Any:
        """``rabbitmqctl ... --formatter json`` on the node, parsed.

        ``settle``: for how many seconds to ask again while the command fails. Right
        after a member restarts and rejoins, a node can answer ``list_queues`` with
        ``{aborted, {no_exists, [rabbit_queue, ...]}}`` for a moment while its tables
        sync: the cluster is settling, not broken.
        """
        deadline = time.monotonic() + settle
        while True:
            try:
                return json.loads(self.ctl(node, *args, "--quiet", "--formatter", "json"))
            except RuntimeError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1.0)

    # Start ----------------------------------------------------------------------------
    def start(self) -> None:
        self._wait_for_free_ports()
        for node in self.nodes:
            self.start_node(node)
        for node in self.nodes:
            self.await_node(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
            self.await_node(node)
        self.check_whole()

    def start_node(self, node: Node) -> None:
        (node.folder / "log").mkdir(parents=True, exist_ok=True)
        (node.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{node.amqp_port}\n"
            "loopback_users = none\n"
            # Quorum queues need a majority; never pause or heal on our own.
            "cluster_partition_handling = ignore\n"
        )
        settings = ", ".join(f"{{{key}, {value}}}" for key, value in self.rabbit_settings.items())
        (node.folder / "advanced.config").write_text(f"[{{rabbit, [{settings}]}}].\n")
        output = (node.folder / "server.out").open("ab")
        # A session of its own: teardown can kill every process the node started
        # (beam, erl_child_setup, inet_gethost) and nothing else.
        self._servers[node.name] = subprocess.Popen(
            [str(self.sbin / "rabbitmq-server")],
            env=self.env(node),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        output.close()

    def await_node(self, node: Node, timeout: float = START_TIMEOUT) -> None:
        """Wait until the node's RabbitMQ application runs and its AMQP port answers."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            server = self._servers.get(node.name)
            if server is not None and server.poll() is not None:
                raise RuntimeError(
                    f"{node.name} exited with {server.returncode} while starting; see "
                    f"{node.folder / 'server.out'} and {node.folder / 'log'}"
                )
            left = max(1.0, deadline - time.monotonic())
            result = subprocess.run(
                [
                    str(self.sbin / "rabbitmqctl"),
                    "-n",
                    node.name,
                    "await_startup",
                    "--timeout",
                    str(int(min(left, 30))),
                ],
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=min(left, 30) + 30,
            )
            if result.returncode == 0 and _port_open(node.amqp_port):
                return
            last_error = (result.stdout + result.stderr).strip()[-500:]
            time.sleep(0.5)
        raise RuntimeError(f"{node.name} did not start within {timeout:.0f} s: {last_error}")

    def _wait_for_free_ports(self, timeout: float = START_TIMEOUT) -> None:
        """Another run of this test may hold the ports: wait for it, then give up clearly."""
        ports = [port for node in self.nodes for port in (node.amqp_port, node.dist_port)]
        deadline = time.monotonic() + timeout
        while True:
            busy = [port for port in ports if _port_open(port)]
            if not busy:
                return
            # A node of ours left by an earlier run that died (its test process is
            # gone, so it is init's child now) would hold the ports for ever.
            names = {node.name for node in self.nodes}
            for pid, environment in _throwaway_node_processes():
                if environment.get("RABBITMQ_NODENAME") in names and _parent_of(pid) == 1:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"ports {busy} on 127.0.0.1 stay busy: is another cluster test running? "
                    "(`ss -ltnp` shows who holds them)"
                )
            time.sleep(1.0)

    # Inspect --------------------------------------------------------------------------
    def node_named(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def node_on_port(self, port: int) -> Node:
        return next(node for node in self.nodes if node.amqp_port == port)

    def running_nodes(self) -> list[Node]:
        """Nodes whose VM runs RabbitMQ (not killed, not stopped)."""
        return [
            node
            for node in self.nodes
            if self.beam_pid(node) is not None and _port_open(node.amqp_port)
        ]

    def quorum_leader(self, queue: str) -> Node:
        """The node that leads the quorum queue ``queue`` now (asked of a live node)."""
        for row in self.ctl_json(
            self.running_nodes()[0], "list_queues", "name", "leader", settle=30.0
        ):
            if row["name"] == queue:
                return self.node_named(row["leader"])
        raise LookupError(f"no queue {queue!r} on the cluster")

    def connections(self) -> list[dict[str, Any]]:
        """Client connections (cluster-wide): ``port`` is the node's AMQP port."""
        rows: list[dict[str, Any]] = self.ctl_json(
            self.running_nodes()[0], "list_connections", "port", "client_properties", settle=30.0
        )
        return rows

    def beam_pid(self, node: Node) -> int | None:
        """The pid of the node's Erlang VM, if it is alive (and is really this node)."""
        try:
            pid: int | None = int(node.pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = None
        if pid is not None and self._is_vm_of(node, pid):
            return pid
        # The pid file names the last VM that started, and a start that lost the race for
        # the node's name (it quits at once) leaves its own pid there while the first VM
        # runs on: look for the node's VM itself.
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and self._is_vm_of(node, int(entry.name)):
                return int(entry.name)
        return None

    def _is_vm_of(self, node: Node, pid: int) -> bool:
        """Whether ``pid`` is a live Erlang VM (not a zombie) running this node."""
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            return False
        return (
            state != "Z"  # a zombie is gone, only not yet reaped
            and b"beam" in command[0]
            and str(self.home).encode() in command  # not a recycled pid
            and f"RABBITMQ_NODENAME={node.name}".encode() in environment
        )

    # Hurt -----------------------------------------------------------------------------
    def kill(self, node: Node, timeout: float = 30.0) -> None:
        """kill -9 the node's VM, as a crash or power loss would, and wait until it is gone."""
        pid = self.beam_pid(node)
        if pid is None:
            raise RuntimeError(f"{node.name} is not running")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while self.beam_pid(node) is not None or _port_open(node.amqp_port):
            server = self._servers.get(node.name)
            if server is not None:
                server.poll()  # reap it, if the VM is our direct child
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} (pid {pid}) did not die")
            time.sleep(0.05)

    def stop_node(self, node: Node) -> None:
        """Shut the node down in order (its VM too), as a restart for an upgrade would."""
        self.ctl(node, "stop", "--timeout", "60", timeout=CLI_TIMEOUT + 60)
        server = self._servers.get(node.name)
        if server is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(30)

    def stop_app(self, node: Node) -> None:
        """Stop RabbitMQ on the node (an orderly shutdown, as for maintenance); the VM stays."""
        self.ctl(node, "stop_app")

    def heal(self) -> None:
        """Bring every node back (restart killed ones, start stopped apps) and wait for all."""
        restarted = []
        for node in self.nodes:
            if self.beam_pid(node) is None:
                self.start_node(node)  # its data folder remembers the cluster
                restarted.append(node)
            elif not _port_open(node.amqp_port):
                self.ctl(node, "start_app")
        for node in self.nodes:
            try:
                self.await_node(node)
            except RuntimeError:
                if node not in restarted:
                    raise
                # Right after its VM went down, a node's name can still be taken (epmd)
                # and the new one quits at once: once more, after a pause.
                time.sleep(5.0)
                self.start_node(node)
                self.await_node(node)
        self.check_whole()

    def check_whole(self) -> None:
        running = set(self.ctl_json(self.nodes[0], "cluster_status")["running_nodes"])
        expected = {node.name for node in self.nodes}
        if running != expected:
            raise RuntimeError(f"cluster runs {sorted(running)}, not {sorted(expected)}")

    # Tear down ------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every node, kill what is left of them, remove the temporary folder."""
        try:
            stoppers = [
                subprocess.Popen(
                    [str(self.sbin / "rabbitmqctl"), "-n", node.name, "stop", "--timeout", "30"],
                    env=self.env(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for node in self.nodes
                if self.beam_pid(node) is not None
            ]
            for stopper in stoppers:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    stopper.wait(45)
                if stopper.poll() is None:
                    stopper.kill()
                    stopper.wait()
        finally:
            for server in self._servers.values():
                if server.poll() is None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(server.pid, signal.SIGKILL)  # the node's own session only
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.wait(10)
            for node in self.nodes:
                pid = self.beam_pid(node)
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            # Whatever else still runs from our folder (a node restarted outside
            # self._servers, one whose pid file is gone): never leave it running.
            for pid, environment in _throwaway_node_processes():
                if environment.get("RABBITMQ_PID_FILE", "").startswith(f"{self.home}/"):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            shutil.rmtree(self.home, ignore_errors=True)


def _throwaway_node_processes() -> list[tuple[int, dict[str, str]]]:
    """Processes of throw-away nodes (their files in a ``deb-cluster-*`` temp folder), by pid."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"/deb-cluster-" not in raw:
            continue
        environment = dict(
            item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item
        )
        if "/deb-cluster-" in environment.get("RABBITMQ_PID_FILE", ""):
            found.append((int(entry.name), environment))
    return found


def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def running_cluster(sbin: Path, **options: Any) -> Iterator[RabbitCluster]:
    """A started cluster, always torn down afterwards (also when starting fails).

    ``options``: see :class:`RabbitCluster` (one node on other ports, settings).
    """
    cluster = _started(sbin, options)
    try:
        yield cluster
    finally:
        cluster.stop()


#: Times a cluster is started afresh when a node quits while starting.
START_ATTEMPTS = 2


def _started(sbin: Path, options: dict[str, Any]) -> RabbitCluster:
    """A started cluster. A node that quits while starting (right after the previous
    cluster on the same node names and ports went down, epmd may still hold its
    name for a moment) gets one more try, on a fresh cluster, after a pause."""
    for attempt in range(1, START_ATTEMPTS + 1):
        cluster = RabbitCluster(sbin, **options)
        try:
            cluster.start()
            return cluster
        except RuntimeError:
            cluster.stop()
            if attempt == START_ATTEMPTS:
                raise
            time.sleep(5.0)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def throwaway_node(prefix: str, amqp_port: int) -> Iterator[RabbitCluster]:
    """One node of its own on ``amqp_port`` (distribution on ``amqp_port + 20000``), torn
    down afterwards; the test is skipped where RabbitMQ's server scripts are missing."""
    sbin = find_sbin()
    if sbin is None:
        pytest.skip("RabbitMQ's server scripts (rabbitmq_server-*/sbin) are not installed")
    with running_cluster(
        sbin,
        node_count=1,
        amqp_port_base=amqp_port - 1,
        dist_port_base=amqp_port + 20000 - 1,
        node_prefix=prefix,
    ) as started:
        yield started
