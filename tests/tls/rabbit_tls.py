"""A throw-away RabbitMQ node with a TLS listener and a CA of its own (made with trustme).

The node ``debtls@localhost`` listens for AMQP on 127.0.0.1:5692, for AMQPS on
5693 and for Erlang distribution on 25692. It verifies client certificates
when one is sent (none is required) and offers EXTERNAL login (the
``rabbitmq_auth_mechanism_ssl`` plugin): a client certificate whose common name
is :data:`CLIENT_USER` logs in as that user. Everything it writes lives under
one temporary ``HOME``, started as ``tests/faults/rabbit_cluster.py`` starts its
nodes, so the machine's own node and its cookie are never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trustme

from faults.rabbit_cluster import _port_open

NODE_NAME = "debtls@localhost"
AMQP_PORT = 5692
AMQPS_PORT = 5693
DIST_PORT = 25692
CLIENT_USER = "tls-client"
START_TIMEOUT = 120.0
PLUGIN = "rabbitmq_auth_mechanism_ssl"


class TlsNode:
    """Start, ask and stop the node; see the module docstring."""

    def __init__(self, sbin: Path) -> None:
        self.sbin = sbin
        self.home = Path(tempfile.mkdtemp(prefix="deb-tls-"))
        self.folder = self.home / "debtls"
        self.ca = trustme.CA(organization_name="domain-event-broker test CA")
        self.files = self._write_certificates()
        self._server: subprocess.Popen[bytes] | None = None
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)
        (self.home / "rabbitmq-env.conf").write_text("")
        (self.home / "enabled_plugins").write_text(f"[{PLUGIN}].\n")

    @property
    def tls_url(self) -> str:
        """PLAIN login over TLS (guest may log in from loopback only; we allow it from anywhere)."""
        return f"amqps://guest:guest@localhost:{AMQPS_PORT}/%2F"

    @property
    def external_url(self) -> str:
        """No user or password: the client certificate says who we are."""
        return f"amqps://localhost:{AMQPS_PORT}/%2F"

    @property
    def plain_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{AMQP_PORT}/%2F"

    def _write_certificates(self) -> dict[str, Path]:
        folder = self.home / "tls"
        folder.mkdir()
        server = self.ca.issue_cert("localhost", "127.0.0.1")
        client = self.ca.issue_cert(CLIENT_USER, common_name=CLIENT_USER)
        files = {
            "ca": folder / "ca.pem",
            "server_cert": folder / "server.pem",
            "server_key": folder / "server.key",
            "client_cert": folder / "client.pem",
            "client_key": folder / "client.key",
        }
        self.ca.cert_pem.write_to_path(files["ca"])
        server.cert_chain_pems[0].write_to_path(files["server_cert"])
        server.private_key_pem.write_to_path(files["server_key"])
        client.cert_chain_pems[0].write_to_path(files["client_cert"])
        client.private_key_pem.write_to_path(files["client_key"])
        return files

    def env(self, node: bool = False) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("RABBITMQ_")}
        env.update(
            HOME=str(self.home),
            RABBITMQ_CONF_ENV_FILE=str(self.home / "rabbitmq-env.conf"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        if node:
            env.update(
                RABBITMQ_NODENAME=NODE_NAME,
                RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                RABBITMQ_NODE_PORT=str(AMQP_PORT),
                RABBITMQ_DIST_PORT=str(DIST_PORT),
                RABBITMQ_MNESIA_BASE=str(self.folder / "mnesia"),
                RABBITMQ_LOG_BASE=str(self.folder / "log"),
                RABBITMQ_CONFIG_FILE=str(self.folder / "rabbitmq.conf"),
                RABBITMQ_ADVANCED_CONFIG_FILE=str(self.folder / "advanced.config"),
                RABBITMQ_ENABLED_PLUGINS_FILE=str(self.home / "enabled_plugins"),
                RABBITMQ_PID_FILE=str(self.folder / "rabbitmq.pid"),
                RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            )
        return env

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        result = subprocess.run(
            [str(self.sbin / "rabbitmqctl"), "-n", NODE_NAME, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} failed: {result.stdout}{result.stderr}"
            )
        return result.stdout

    def connections(self) -> list[dict[str, Any]]:
        """Client connections: ``ssl``, ``user``, ``auth_mechanism``, ``client_properties``."""
        output = self.ctl(
            "list_connections",
            "ssl",
            "user",
            "auth_mechanism",
            "client_properties",
            "--quiet",
            "--formatter",
            "json",
        )
        rows: list[dict[str, Any]] = json.loads(output)
        return rows

    def start(self) -> None:
        busy = [port for port in (AMQP_PORT, AMQPS_PORT, DIST_PORT) if _port_open(port)]
        if busy:
            raise RuntimeError(f"ports {busy} on 127.0.0.1 are busy: is another TLS test running?")
        (self.folder / "log").mkdir(parents=True, exist_ok=True)
        (self.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{AMQP_PORT}\n"
            f"listeners.ssl.1 = 127.0.0.1:{AMQPS_PORT}\n"
            "loopback_users = none\n"
            f"ssl_options.cacertfile = {self.files['ca']}\n"
            f"ssl_options.certfile = {self.files['server_cert']}\n"
            f"ssl_options.keyfile = {self.files['server_key']}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
            "auth_mechanisms.1 = PLAIN\n"
            "auth_mechanisms.2 = AMQPLAIN\n"
            "auth_mechanisms.3 = EXTERNAL\n"
            "ssl_cert_login_from = common_name\n"
        )
        (self.folder / "advanced.config").write_text("[].\n")
        output = (self.folder / "server.out").open("ab")
        self._server = subprocess.Popen(
            [str(self.sbin / "rabbitmq-server")],
            env=self.env(node=True),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        output.close()
        self._await_startup()
        # The user the client certificate logs in as (its password is never used).
        self.ctl("add_user", CLIENT_USER, secrets.token_hex(16))
        self.ctl("set_permissions", "-p", "/", CLIENT_USER, ".*", ".*", ".*")

    def _await_startup(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._server is not None
            if self._server.poll() is not None:
                raise RuntimeError(
                    f"{NODE_NAME} exited with {self._server.returncode}; see {self.folder}"
                )
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.ctl("await_startup", "--timeout", "30", timeout=60)
                if _port_open(AMQPS_PORT) and _port_open(AMQP_PORT):
                    return
            time.sleep(0.5)
        raise RuntimeError(f"{NODE_NAME} did not start within {START_TIMEOUT:.0f} s")

    def stop(self) -> None:
        try:
            if self._server is not None and self._server.poll() is None:
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self.ctl("stop", "--timeout", "30", timeout=45)
        finally:
            if self._server is not None:
                if self._server.poll() is None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(self._server.pid, signal.SIGKILL)  # the node's session only
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._server.wait(10)
            shutil.rmtree(self.home, ignore_errors=True)


@contextlib.contextmanager
def running_tls_node(sbin: Path) -> Iterator[TlsNode]:
    """A started node, always torn down afterwards (also when starting fails)."""
    node = TlsNode(sbin)
    try:
        node.start()
        yield node
    finally:
        node.stop()
