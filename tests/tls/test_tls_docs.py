"""The TLS block of docs/configuration.md runs against the TLS node, as written.

Only its URL and file names are the node's: its own CA, a client certificate and key.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from rabbit_tls import TlsNode

from docs_blocks import DOCS, Script, blocks, environment, run_script

pytestmark = pytest.mark.tls


def test_the_tls_example_publishes_over_tls_with_a_client_certificate(
    tls_node: TlsNode, tmp_path: Path
) -> None:
    [block] = [block for block in blocks(DOCS / "configuration.md") if block.marker == "tls"]
    name = f"docs-tls-{uuid.uuid4().hex[:8]}"
    script = Script(
        replace={
            "amqps://app:secret@rabbit.internal/shop": tls_node.tls_url,
            "/etc/ssl/rabbit-ca.pem": str(tls_node.files["ca"]),
            "/etc/ssl/app.pem": str(tls_node.files["client_cert"]),
            "/etc/ssl/app.key": str(tls_node.files["client_key"]),
        },
        epilogue=f"""
            # The event arrived over TLS: a subscriber on the same settings receives the next.
            got = []
            def keep(event):
                got.append(event.data)
                subscriber.stop_consuming()
            subscriber.register(keep, "{name}", ["order.placed"], auto_delete=True)
            publish_domain_event("order.placed", {{"id": 8}}, connection_settings=RABBIT)
            subscriber.start_consuming(timeout=20)
            assert got == [{{"id": 8}}], got
        """,
    )
    source = script.source(block.code, tls_node.tls_url)
    result = run_script(source, tmp_path, environment(tls_node.tls_url))
    assert result.returncode == 0, result.stdout + result.stderr
