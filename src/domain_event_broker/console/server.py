"""The console's HTTP side: routes, token login, CSRF, and answers that never leak.

The standard library's ``ThreadingHTTPServer``: a console serves a handful of
operators, and needs no framework. Actions are POSTs from a logged-in session
carrying its CSRF token; ``read_only`` serves no action at all. Bad input gets
a 4xx that says what is wrong; any other failure a 5xx with one line, never a
traceback (that goes to the log).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import secrets
import threading
import urllib.parse
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..errors import BrokerUnavailable
from . import pages
from .dead_letters import in_group, is_event
from .model import Console

log = logging.getLogger(__name__)

#: The environment variable holding the token that actions need.
TOKEN_VARIABLE = "DOMAIN_EVENT_BROKER_CONSOLE_TOKEN"
SESSION_COOKIE = "console_session"
#: Host names a console on loopback answers to (besides loopback addresses).
LOOPBACK_NAMES = ("localhost",)
#: Bytes of a form the console reads at most (a form holds a few ids).
MAX_FORM_BYTES = 16 * 1024


class ClientError(Exception):
    """Bad input: answered with ``status`` and the message."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class ConsoleServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], console: Console, token: str, read_only: bool
    ) -> None:
        super().__init__(address, ConsoleHandler)
        self.console = console
        self.token = token
        self.read_only = read_only
        #: session id -> its CSRF token.
        self.sessions: dict[str, str] = {}
        self.sessions_lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"


class ConsoleHandler(BaseHTTPRequestHandler):
    server: ConsoleServer
    server_version = "domain-events-console"

    # Dispatch -----------------------------------------------------------------------
    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _answer(self, route: Any) -> None:
        try:
            self._check_host()
            route(urllib.parse.urlsplit(self.path))
        except ConnectionError:
            log.debug(
                "console: the browser left before %s %s was answered", self.command, self.path
            )
        except ClientError as error:
            self._send(error.status, str(error), "text/plain; charset=utf-8")
        except BrokerUnavailable as error:
            self._send(HTTPStatus.BAD_GATEWAY, str(error), "text/plain; charset=utf-8")
        except Exception:
            log.exception("console: %s %s failed", self.command, self.path)
            self._send(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "the console failed to answer this; its log says why",
                "text/plain; charset=utf-8",
            )

    def _get(self, url: urllib.parse.SplitResult) -> None:
        console = self.server.console
        path = url.path.rstrip("/") or "/"
        if path == "/":
            self._html(pages.map_page(console.event_map(), **self._who()))
        elif path == "/map.fragment":
            self._html(pages.map_fragment(console.event_map()))
        elif path == "/api/map":
            self._json(console.event_map())
        elif path == "/dead-letters" or path.startswith("/dead-letters/"):
            self._dead_letters_page(url, path)
        elif path == "/api/dead-letters":
            only = urllib.parse.parse_qs(url.query).get("subscriber", [None])[0]
            self._json(self._letters(only))
        elif path.startswith("/api/jobs/"):
            self._json(self._job(path.removeprefix("/api/jobs/")).as_dict())
        elif path == "/outbox":
            self._html(
                pages.outbox_page(console.outbox_view(), can_act=self._can_act(), **self._who())
            )
        elif path == "/api/outbox":
            self._json(console.outbox_view())
        elif path == "/login":
            if self.server.read_only:
                raise ClientError(HTTPStatus.NOT_FOUND, "this console is read-only: no login")
            self._html(pages.login_page())
        else:
            raise ClientError(HTTPStatus.NOT_FOUND, f"no page {url.path}: start at /")

    def _post(self, url: urllib.parse.SplitResult) -> None:
        if self.server.read_only:
            raise ClientError(HTTPStatus.FORBIDDEN, "this console is read-only: no actions")
        form = self._form()
        if url.path == "/login":
            self._login(form.get("token", ""))
            return
        csrf = self._session_csrf()
        if csrf is None:
            raise ClientError(HTTPStatus.FORBIDDEN, "log in first (/login)")
        if not hmac.compare_digest(form.get("csrf", ""), csrf):
            raise ClientError(HTTPStatus.FORBIDDEN, "stale or missing CSRF token: reload the page")
        if url.path == "/logout":
            with self.server.sessions_lock:
                self.server.sessions.pop(self._session_id() or "", None)
            self._redirect("/")
        elif url.path in ("/dead-letters/replay", "/dead-letters/discard"):
            self._act_on_letters(url.path.rsplit("/", 1)[1], form)
        elif url.path in ("/outbox/retry", "/outbox/discard"):
            self._act_on_outbox(url.path.rsplit("/", 1)[1], form)
        else:
            raise ClientError(HTTPStatus.NOT_FOUND, f"no action {url.path}")

    def _check_host(self) -> None:
        """On loopback, answer only requests for a loopback name: a web page whose own
        name was made to point at 127.0.0.1 (DNS rebinding) must not read the console."""
        host = str(self.server.server_address[0])
        if not ipaddress.ip_address(host).is_loopback:
            return
        asked = urllib.parse.urlsplit("//" + self.headers.get("Host", "")).hostname or ""
        if asked not in LOOPBACK_NAMES and not _is_loopback(asked):
            raise ClientError(HTTPStatus.FORBIDDEN, f"this console answers on {host} only")

    # Views --------------------------------------------------------------------------
    def _letters(self, only: str | None) -> list[dict[str, Any]]:
        try:
            return self.server.console.dead_letters(only)
        except LookupError as error:
            raise ClientError(HTTPStatus.NOT_FOUND, str(error)) from None

    def _dead_letters_page(self, url: urllib.parse.SplitResult, path: str) -> None:
        only = urllib.parse.unquote(path.removeprefix("/dead-letters").strip("/")) or None
        job_id = urllib.parse.parse_qs(url.query).get("job", [None])[0]
        running = self._job(job_id).as_dict() if job_id else None
        if running is not None and running["done"]:
            running = None
        finished = [job.as_dict() for job in self.server.console.finished]
        self._html(
            pages.dead_letters_page(
                self._letters(only),
                finished,
                running,
                can_act=self._can_act(),
                **self._who(),
            )
        )

    def _job(self, job_id: str) -> Any:
        job = self.server.console.jobs.get(int(job_id)) if job_id.isdigit() else None
        if job is None:
            raise ClientError(HTTPStatus.NOT_FOUND, f"no action {job_id!r}")
        return job

    # Actions ------------------------------------------------------------------------
    def _act_on_letters(self, verb: str, form: dict[str, str]) -> None:
        subscriber = _required(form, "subscriber")
        group, event = form.get("group"), form.get("event")
        if bool(group) == bool(event):
            raise ClientError(HTTPStatus.BAD_REQUEST, "give either group or event")
        listed = self._letters(subscriber)[0]
        if group:
            matches = in_group(group)
            what = f"{verb} group {group} of {subscriber}"
        else:
            matches = is_event(str(event))
            what = f"{verb} event {event} of {subscriber}"
        job = self.server.console.start_action(subscriber, verb, matches, what, listed["count"])
        quoted = urllib.parse.quote(subscriber, safe="")
        self._redirect(f"/dead-letters/{quoted}?job={job.id}")

    def _act_on_outbox(self, verb: str, form: dict[str, str]) -> None:
        outbox = self.server.console.outbox
        if outbox is None:
            raise ClientError(HTTPStatus.NOT_FOUND, "no outbox: start with --database-url")
        ids_text = form.get("ids", "").replace(",", " ").split()
        if not all(part.isdigit() for part in ids_text):
            raise ClientError(HTTPStatus.BAD_REQUEST, "ids: row ids separated by commas")
        ids = [int(part) for part in ids_text] or None
        done = outbox.retry_parked(ids) if verb == "retry" else outbox.discard_parked(ids)
        log.info("console: outbox %s of %d parked rows", verb, done)
        self._redirect("/outbox")

    # Sessions -----------------------------------------------------------------------
    def _login(self, token: str) -> None:
        if not hmac.compare_digest(token.encode(), self.server.token.encode()):
            self._send(HTTPStatus.FORBIDDEN, pages.login_page("wrong token"), "text/html")
            return
        session, csrf = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        with self.server.sessions_lock:
            self.server.sessions[session] = csrf
        cookie = f"{SESSION_COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/"
        self._redirect("/", cookie)

    def _session_id(self) -> str | None:
        cookies = SimpleCookie(self.headers.get("Cookie", ""))
        morsel = cookies.get(SESSION_COOKIE)
        return morsel.value if morsel is not None else None

    def _session_csrf(self) -> str | None:
        with self.server.sessions_lock:
            return self.server.sessions.get(self._session_id() or "")

    def _can_act(self) -> bool:
        return not self.server.read_only and self._session_csrf() is not None

    def _who(self) -> dict[str, Any]:
        csrf = "" if self.server.read_only else (self._session_csrf() or "")
        return {"logged_in": bool(csrf), "read_only": self.server.read_only, "csrf": csrf}

    # I/O ----------------------------------------------------------------------------
    def _form(self) -> dict[str, str]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ClientError(HTTPStatus.BAD_REQUEST, "Content-Length is not a number") from None
        if not 0 <= length <= MAX_FORM_BYTES:
            raise ClientError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "form too large")
        text = self.rfile.read(length).decode("utf-8", "replace")
        return {key: values[0] for key, values in urllib.parse.parse_qs(text).items()}

    def _html(self, text: str) -> None:
        self._send(HTTPStatus.OK, text, "text/html; charset=utf-8")

    def _json(self, value: object) -> None:
        self._send(HTTPStatus.OK, json.dumps(value), "application/json")

    def _redirect(self, location: str, cookie: str | None = None) -> None:
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", location)
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, status: HTTPStatus, text: str, content_type: str) -> None:
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Frame-Options", "DENY")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("console: %s %s", self.address_string(), format % args)


def _is_loopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise ClientError(HTTPStatus.BAD_REQUEST, f"missing {name}")
    return value
