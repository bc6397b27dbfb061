"""Every code block of the documentation site (docs/*.md) runs, or is checked, here.

- ```python: run as a script against the real broker (docs_blocks.py says how). A block
  with ``<!-- test: KEY -->`` on the line before it is run the way CHECKS[KEY] says: the
  names it leaves to the reader come from a prelude, an epilogue checks what it did, and a
  block that consumes until stopped gets events and then SIGTERM. A block included from a
  file (``--8<-- "examples/x.py"``) must be a file that a test runs (EXAMPLES_RUN_BY).
- ```pycon: run as a doctest.
- ```console: a shell session; its ``$ `` lines are checked as ```sh lines are, the
  rest is output.
- ```sh: valid shell (``<name>`` placeholders aside); each ``domain-events`` line parses
  with the command's own parser, each ``domain-events-relay`` option is one it lists, each
  ``manage.py`` command exists, each ``pip install`` extra and ``make`` target exists.
- ```yaml parses; ```sql is the upgrade DDL the library ships; ```text and ```mermaid
  are output and pictures (the quick start's output is checked by its own test).

A new page is found by its file name; a new block needs nothing unless it is a fragment.
"""

from __future__ import annotations

import doctest
import functools
import re
import shlex
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from docs_blocks import (
    LOCAL_BROKER,
    ROOT,
    Background,
    Block,
    Consumer,
    Script,
    blocks,
    environment,
    pages,
    run_script,
    wait_for_consumer,
)
from domain_event_broker.cli import build_parser
from domain_event_broker.sqlalchemy.tables import OUTBOX_HEADERS_UPGRADE_DDL, OUTBOX_UPGRADE_DDL
from support import free_port, http_get, wait_for

ALL = [block for page in pages() for block in blocks(page)]

#: Files the docs include as snippets, and the test that runs each.
EXAMPLES_RUN_BY = {
    "examples/subscribe.py": "tests/test_docs_site.py",
    "examples/publish.py": "tests/test_docs_site.py",
    "examples/fastapi_app.py": "tests/aio/test_aio_fastapi_example.py",
    "examples/sqlalchemy_outbox.py": "tests/sqlalchemy_tests/test_sqlalchemy_outbox.py",
    "examples/django_project/shop/services.py": "tests/django_tests/test_django_example_project.py",
    "examples/django_project/shop/handlers.py": "tests/django_tests/test_django_example_project.py",
}
#: Blocks run elsewhere: the TLS one needs the TLS node of tests/tls.
RUN_ELSEWHERE = {"tls": "tests/tls/test_tls_docs.py"}


def _ids(found: list[Block]) -> list[str]:
    return [block.where for block in found]


def of(language: str) -> list[Block]:
    return [block for block in ALL if block.language == language]


def test_every_block_is_of_a_kind_this_test_knows() -> None:
    known = {"python", "pycon", "sh", "console", "yaml", "sql", "text", "mermaid", ""}
    assert {block.language for block in ALL} <= known, _ids(
        [block for block in ALL if block.language not in known]
    )
    for block in ALL:
        if block.marker is not None:
            assert block.marker in CHECKS or block.marker in RUN_ELSEWHERE, block.where
    used = {block.marker for block in ALL}
    assert set(CHECKS) <= used, f"checks for blocks that are gone: {set(CHECKS) - used}"


# --- Python blocks ---------------------------------------------------------------------


def _django_project(folder: Path) -> dict[str, str]:
    return {
        "PYTHONPATH": str(ROOT / "examples" / "django_project"),
        "DJANGO_SETTINGS_MODULE": "settings",
        "EXAMPLE_SQLITE_PATH": str(folder / "db.sqlite3"),
    }


def _serves_health(port: int) -> Callable[[Background], None]:
    def check(background: Background) -> None:
        wait_for(lambda: http_get(port, "/readyz")[0] == 200, what="/readyz 200")
        status, body = http_get(port, "/healthz")
        assert status == 200 and '"consuming": true' in body, body

    return check


def checks(name: str) -> dict[str, Script | Consumer]:
    """How each marked block runs; ``name`` makes its queue names the test's own."""
    port = free_port()
    return {
        "subscribe-printer": Consumer(
            queue=name,
            script=Script(replace={'"printer"': f'"{name}"'}),
            publish=[("user.registered", {"user_id": 7})],
            expect=["user.registered {'user_id': 7}", f"consuming queue {name} for user.*"],
        ),
        "retry-sync-data": Consumer(
            queue=name,
            script=Script(replace={'"sync_data"': f'"{name}"'}),
            publish=[("user.registered", {"user_id": 7})],
            expect=["synced {'user_id': 7}"],
        ),
        "replay-sync-data": Script(
            replace={'"sync_data"': f'"{name}"'},
            prelude=f"""
                import threading
                from domain_event_broker import Subscriber, publish_domain_event
                from domain_event_broker.status import subscriber_status

                failing = Subscriber(handle_signals=False)
                def fail(event):
                    raise RuntimeError("the bug, since fixed")
                failing.register(fail, "{name}", ["docs.replay.*"], dead_letter=True)
                for region in ("eu", "us", "eu"):
                    publish_domain_event("docs.replay.x", {{"region": region}})
                def stop_when_dead_lettered():
                    while subscriber_status("{name}").dead_letters != 3:
                        threading.Event().wait(0.05)
                    failing.stop_consuming()
                threading.Thread(target=stop_when_dead_lettered, daemon=True).start()
                failing.start_consuming(timeout=30)
                assert subscriber_status("{name}").dead_letters == 3
            """,
            epilogue=f"""
                state = subscriber_status("{name}")
                assert (state.waiting, state.dead_letters) == (3, 0), state
            """,
        ),
        "idempotent-handler": Script(
            epilogue="""
                from domain_event_broker import DomainEvent
                event = DomainEvent("user.registered", {"user_id": 7})
                send_welcome_mail(event)
                send_welcome_mail(event)  # delivered again
                assert database.execute("SELECT count(*) FROM mail").fetchone() == (1,)
            """
        ),
        "async-subscriber": Consumer(
            queue=name,
            script=Script(replace={'"welcome-mailer"': f'"{name}"'}),
            publish=[("user.registered", {"email": "ada@example.com"})],
            expect=["welcome mail to ada@example.com"],
        ),
        "cluster": Consumer(
            queue=name,
            script=Script(
                # One node stands for the three: the same code, the local broker's URL.
                replace={
                    f"amqp://app:secret@rabbit-{n}/shop": "amqp://guest:guest@localhost:5672/%2F"
                    for n in (1, 2, 3)
                }
                | {'"invoice-mailer"': f'"{name}"'},
            ),
            expect=["invoice mailed for order 7"],
        ),
        "metrics-listener": Script(
            epilogue="""
                assert metrics.count("published") == 1
                assert 'kind="published"' in metrics.prometheus_text()
            """
        ),
        "middleware": Script(
            epilogue=f"""
                from domain_event_broker import Subscriber, publish_domain_event
                seen = []
                subscriber = Subscriber(handle_signals=False)
                def handler(event):
                    seen.append(event_id.get())
                    subscriber.stop_consuming()
                subscriber.register(handler, "{name}", ["docs.middleware"], auto_delete=True)
                published = publish_domain_event("docs.middleware", {{}})
                subscriber.start_consuming(timeout=20)
                assert seen == [published.uuid_string], seen
            """
        ),
        "prometheus": Script(
            replace={
                "serve_metrics(9100)": f"serve_metrics({port})",
                '["sync_data", "printer"]': f'["{name}"]',
            },
            prelude=f"""
                from domain_event_broker import Subscriber
                Subscriber().register(print, "{name}", ["docs.prometheus"])  # a queue to watch
            """,
            epilogue=f"""
                from urllib.request import urlopen
                from domain_event_broker import publish_domain_event
                publish_domain_event("docs.prometheus", {{}})
                text = urlopen("http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
                assert 'domain_events_published_total{{routing_key="docs.prometheus"}} 1.0' in text
                assert 'domain_event_queue_depth{{subscriber="{name}"}} 1.0' in text
            """,
        ),
        "health-probe": Consumer(
            queue=name,
            script=Script(
                replace={"probe.serve(8080,": f"probe.serve({port},", '"sync_data"': f'"{name}"'}
            ),
            publish=[("user.registered", {"user_id": 7})],
            expect=["synced {'user_id': 7}"],
            check=_serves_health(port),
        ),
        "in-memory-pytest": Script(),  # a test module: pytest runs it
        "django-settings": Script(
            epilogue="""
                import django
                from django.conf import settings
                settings.configure(**{k: v for k, v in globals().items() if k.isupper()})
                django.setup()
                from domain_event_broker.settings import default_broker
                broker = repr(default_broker())
                assert "amqp://user:***@rabbitmq-host/domain-events" in broker, broker
                assert "ca_file='/etc/ssl/rabbit-ca.pem'" in broker, broker
                assert "connection_name='shop'" in broker, broker
            """
        ),
        "django-process-once": Script(
            prelude="""
                import django
                from django.core.management import call_command
                django.setup()
                call_command("migrate", verbosity=0)
            """,
            epilogue="""
                from domain_event_broker import DomainEvent
                event = DomainEvent("shop.order.placed", {"reference": "r-1", "email": "a@b.c"})
                send_confirmation_mail(event)
                send_confirmation_mail(event)  # delivered again
                assert ConfirmationMail.objects.count() == 1
            """,
        ),
    }


def _page_opening(page: str) -> str:
    """The first Python block of a page: what the page's later fragments build on."""
    return next(b.code for b in blocks(ROOT / "docs" / page) if b.language == "python")


def contract_checks(name: str) -> dict[str, Script | Consumer]:
    """docs/contracts.md: its fragments run after the page's declaration of OrderPlaced."""
    declared = _page_opening("contracts.md")
    watch = f"""
        from domain_event_broker import Subscriber
        Subscriber().register(print, "{name}", ["order.placed"])  # a queue to watch
    """
    return {
        "contracts-publish": Script(
            prelude=declared + textwrap.dedent(watch),
            epilogue=f"""
                import time
                from domain_event_broker.status import subscriber_status
                deadline = time.monotonic() + 10
                while subscriber_status("{name}").waiting != 1 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert subscriber_status("{name}").waiting == 1
            """,
        ),
        "contracts-receive": Script(
            prelude=declared
            + "from domain_event_broker import Subscriber\nsubscriber = Subscriber()\n",
            replace={'"stock-reservations"': f'"{name}"'},
            epilogue=f"""
                from domain_event_broker.contracts import publish_event
                from domain_event_broker.status import subscriber_status
                publish_event(OrderPlaced(OrderPlacedData("o-2", 990, "USD")))
                import time
                deadline = time.monotonic() + 10
                while subscriber_status("{name}").waiting != 1 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert subscriber_status("{name}").waiting == 1
                subscriber.stop_consuming()
            """,
        ),
        "contracts-upcast": Script(
            prelude=declared,
            epilogue="""
                assert total_in_cents({"order_id": "o-1", "total": 12.5}) == {
                    "order_id": "o-1", "total_cents": 1250, "currency": "EUR"}
            """,
        ),
    }


def history_checks(name: str) -> dict[str, Script | Consumer]:
    """docs/history.md: an archive on an exchange of the test's own, one event in it."""
    exchange = f"{name}-events"
    return {
        "history-start-from": Consumer(
            queue=name,
            script=Script(
                replace={
                    "Subscriber()": f'Subscriber(exchange="{exchange}")',
                    '"search-indexer"': f'"{name}"',
                },
                prelude=f"""
                    import os
                    from domain_event_broker import DomainEvent, Publisher
                    from domain_event_broker.history import enable_archive
                    url = os.environ["DOMAIN_EVENT_BROKER"]
                    enable_archive(url, "{exchange}", max_age="1D")
                    past = Publisher(url, exchange="{exchange}")
                    past.publish(DomainEvent("order.placed", {{"total": 99}}, 42).to_json(),
                                 "order.placed")
                    past.disconnect()
                """,
                epilogue=f"""
                    from domain_event_broker.history import disable_archive
                    disable_archive(url, "{exchange}")
                """,
            ),
            expect=["indexing 42 {'total': 99}"],
        ),
    }


def ordered_checks(name: str) -> dict[str, Script | Consumer]:
    """docs/ordered.md: the ordered subscriber consumes its partitions until stopped."""
    return {
        "ordered-shipping": Consumer(
            queue=f"{name}-p000",
            script=Script(
                replace={
                    '"shipping"': f'"{name}"',
                    "    ...\n": "    print('shipped', event.data)\n",
                }
            ),
            publish=[("order.shipped", {"order": 1})],
            expect=["shipped {'order': 1}"],
        ),
    }


def checks_of_every_page(name: str) -> dict[str, Script | Consumer]:
    return {**checks(name), **contract_checks(name), **history_checks(name), **ordered_checks(name)}


CHECKS = checks_of_every_page("docs")
PYTHON = [
    block for block in of("python") if not block.include and block.marker not in RUN_ELSEWHERE
]


@pytest.mark.parametrize("block", PYTHON, ids=_ids(PYTHON))
def test_python_block_runs(block: Block, broker_url: str, name: str, tmp_path: Path) -> None:
    check = checks_of_every_page(name).get(block.marker or "", Script())
    if isinstance(check, Consumer):
        check.run(block.code, broker_url, tmp_path)
        return
    extra = _django_project(tmp_path) if block.marker == "django-process-once" else {}
    source = check.source(block.code, broker_url)
    if block.marker == "in-memory-pytest":  # a test module: pytest runs it
        (tmp_path / "test_welcome.py").write_text(source, encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_welcome.py"],
            cwd=tmp_path,
            env=environment(broker_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout
        return
    result = run_script(source, tmp_path, environment(broker_url, **extra))
    assert result.returncode == 0, f"{block.where}:\n{result.stdout}{result.stderr}"


INCLUDED = [block for block in of("python") if block.include]


@pytest.mark.parametrize("block", INCLUDED, ids=_ids(INCLUDED))
def test_included_python_is_an_example_a_test_runs(block: Block) -> None:
    path, section = block.include  # type: ignore[misc]
    assert path in EXAMPLES_RUN_BY, f"{block.where}: {path} is run by no test listed here"
    runner = (ROOT / EXAMPLES_RUN_BY[path]).read_text(encoding="utf-8")
    assert Path(path).name in runner or Path(path).parent.name in runner
    if section is not None:
        assert f"[start:{section}]" in (ROOT / path).read_text(encoding="utf-8")


PYCON = of("pycon")


@pytest.mark.parametrize("block", PYCON, ids=_ids(PYCON))
def test_pycon_block(block: Block) -> None:
    test = doctest.DocTestParser().get_doctest(block.code, {}, block.where, None, block.line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{block.where}: {result.failed} example(s) failed (see output)"


# --- shell, YAML, SQL ------------------------------------------------------------------


def _commands(code: str) -> list[list[str]]:
    """Each command line of a shell block as words, comments and continuations removed."""
    joined = code.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        # A redirection is the shell's, not the command's: `cmd > file` checks `cmd`.
        for at, word in enumerate(words):
            if word in {">", ">>", "<", "2>", "2>&1"} or word.startswith((">", "2>")):
                words = words[:at]
                break
        if words:
            commands.append(words)
    return commands


@functools.cache
def _help_of(program: str) -> str:
    executable = Path(sys.executable).parent / program
    return subprocess.run(
        [str(executable), "--help"], capture_output=True, text=True, timeout=60
    ).stdout


def _extras() -> set[str]:
    return set(metadata.metadata("domain-event-broker").get_all("Provides-Extra") or ())


def _check_command(words: list[str], where: str) -> None:
    program, *args = words
    if program == "domain-events":
        try:
            build_parser().parse_args(args)
        except SystemExit as exit:
            assert exit.code == 0, f"{where}: domain-events {shlex.join(args)} does not parse"
    elif program == "domain-events-relay":
        for option in (arg.split("=")[0] for arg in args if arg.startswith("--")):
            assert option in _help_of(program), f"{where}: {program} has no {option}"
    elif program == "python" and args[:1] == ["manage.py"]:
        commands = ROOT / "src/domain_event_broker/django/management/commands"
        assert (commands / f"{args[1]}.py").exists() or args[1] == "migrate", where
    elif program == "pip" and args[:1] == ["install"]:
        for package in args[1:]:
            extras = re.findall(r"\[([\w,-]+)\]", package)
            for extra in ",".join(extras).split(",") if extras else ():
                assert extra in _extras(), f"{where}: no extra [{extra}]"
    elif program == "make":
        makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
        for target in args:
            assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), where


def _session_commands(block: Block) -> Block:
    """A ```console block's commands (the ``$ `` lines) as a ```sh block."""
    commands = [line[2:] for line in block.code.splitlines() if line.startswith("$ ")]
    assert commands, f"{block.where}: a console block with no '$ ' command"
    return Block(block.page, block.line, "sh", "\n".join(commands) + "\n", block.marker)


SHELL = of("sh") + [_session_commands(block) for block in of("console")]


@pytest.mark.parametrize("block", SHELL, ids=_ids(SHELL))
def test_shell_block_is_valid_and_its_commands_exist(block: Block) -> None:
    # <vhost>, <user>: placeholders for the reader, not redirections.
    code = re.sub(r"<([\w-]+)>", r"\1", block.code)
    syntax = subprocess.run(["bash", "-n"], input=code, capture_output=True, text=True)
    assert syntax.returncode == 0, f"{block.where}: {syntax.stderr}"
    for words in _commands(code):
        _check_command(words, block.where)


@pytest.mark.parametrize("block", of("yaml"), ids=_ids(of("yaml")))
def test_yaml_block_parses(block: Block) -> None:
    assert yaml.safe_load(block.code)


def test_sql_block_is_the_upgrade_the_library_ships() -> None:
    [block] = of("sql")
    shipped = OUTBOX_UPGRADE_DDL.strip().rstrip(";") + ";\n" + OUTBOX_HEADERS_UPGRADE_DDL
    assert block.code.split() == shipped.split() or _words(block.code) == _words(shipped)


def _words(sql: str) -> list[str]:
    return [word for word in re.split(r"[\s;]+", sql) if word]


# --- the quick start, as a reader follows it --------------------------------------------


def test_the_quick_start_runs_in_two_terminals(broker_url: str, tmp_path: Path) -> None:
    env = environment(broker_url)
    bin_dir = Path(sys.executable).parent
    steps = blocks(ROOT / "docs" / "quickstart.md")
    kinds = [block.language for block in steps]
    assert kinds == ["sh", "python", "sh", "text", "python", "sh", "text", "sh"], kinds
    (
        install,
        subscriber_file,
        run_subscriber,
        logged,
        publisher_file,
        run_publisher,
        printed,
        clean,
    ) = steps

    assert _commands(install.code) == [
        ["pip", "install", "domain-event-broker"],
        ["domain-events", "--version"],
    ]
    version = subprocess.run(
        [str(bin_dir / "domain-events"), "--version"], env=env, capture_output=True, text=True
    )
    assert "RabbitMQ 3." in version.stdout or "RabbitMQ 4." in version.stdout, version.stdout

    for block, command in ((subscriber_file, run_subscriber), (publisher_file, run_publisher)):
        path, _ = block.include  # type: ignore[misc]
        [[python, script]] = _commands(command.code)
        assert (python, script) == ("python", Path(path).name)
        (tmp_path / script).write_text((ROOT / path).read_text(encoding="utf-8"))

    terminal_1 = Background([sys.executable, "subscribe.py"], tmp_path, env)
    try:
        wait_for_consumer(broker_url, "sync_data", terminal_1)
        terminal_1.wait_for_output(logged.code.strip().removeprefix("... "))
        terminal_2 = subprocess.run(
            [sys.executable, "publish.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert terminal_2.returncode == 0, terminal_2.stderr
        assert terminal_2.stdout.count("published user.registered") == 3
        expected = printed.code.strip().splitlines()
        for line in expected:
            terminal_1.wait_for_output(line.removesuffix(" (event ...)"), timeout=20)
    finally:
        status = terminal_1.stop(signal.SIGINT)  # Ctrl-C
    assert status == 0, terminal_1.output
    assert len(terminal_1.stdout) == len(expected), terminal_1.stdout

    listing, delete = _commands(clean.code)
    subscribers = subprocess.run(
        [str(bin_dir / listing[0]), *listing[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "sync_data" in subscribers.stdout, subscribers.stdout + subscribers.stderr
    deleted = subprocess.run(
        [str(bin_dir / delete[0]), *delete[1:]], env=env, capture_output=True, text=True, timeout=60
    )
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted subscriber sync_data: 0 events removed" in deleted.stdout


def test_the_replay_example_replays_the_quick_start_s_dead_letters(
    broker_url: str, tmp_path: Path, make_subscriber: Callable[..., object]
) -> None:
    from domain_event_broker import publish_domain_event
    from support import consume_until, queue_depth

    subscriber = make_subscriber()
    subscriber.register(lambda e: 1 / 0, "sync_data", ["docs.quickstart.*"], dead_letter=True)  # type: ignore[attr-defined]
    publish_domain_event("docs.quickstart.x", {"n": 1}, connection_settings=broker_url)
    consume_until(subscriber, lambda: queue_depth(broker_url, "sync_data-dl") == 1, settle=0.2)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "replay.py")],
        env=environment(broker_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "events left in the dead-letter queue" in result.stdout
    assert (queue_depth(broker_url, "sync_data"), queue_depth(broker_url, "sync_data-dl")) == (1, 0)


def test_no_page_names_the_local_broker_other_than_as_the_default() -> None:
    # The runner swaps this URL for the test vhost's: a block with another spelling of the
    # local broker would run against the machine's default vhost instead.
    for block in of("python"):
        assert "localhost:5672" not in block.code or LOCAL_BROKER in block.code, block.where
