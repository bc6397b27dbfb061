"""``manage.py consume_domain_events [names...]``: run the handlers declared with ``@subscribe``."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ....settings import mask_url, resolve_url
from ....subscriber import PREFETCH_COUNT, SHUTDOWN_GRACE_PERIOD, Subscriber
from ...registry import HANDLERS_MODULE, autodiscover_handlers


class Command(BaseCommand):
    help = (
        f"Receive domain events for the handlers declared with @subscribe in the apps' "
        f"{HANDLERS_MODULE}.py (all of them, or the named ones) until SIGTERM/SIGINT."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("names", nargs="*", help="subscriber names (default: all)")
        parser.add_argument(
            "--workers", type=int, default=1, help="threads running handlers (default 1: in order)"
        )
        parser.add_argument("--prefetch", type=int, default=PREFETCH_COUNT)
        parser.add_argument("--shutdown-grace-period", type=float, default=SHUTDOWN_GRACE_PERIOD)
        parser.add_argument("--timeout", type=float, help="stop after this many seconds")
        parser.add_argument("--list", action="store_true", help="list the handlers and exit")

    def handle(self, *args: Any, **options: Any) -> None:
        handlers = autodiscover_handlers()
        if options["list"]:
            for name, registration in sorted(handlers.items()):
                self.stdout.write(f"{name}: {', '.join(registration.binding_keys)}")
            return
        names = options["names"] or sorted(handlers)
        unknown = [name for name in names if name not in handlers]
        if unknown:
            known = (
                ", ".join(sorted(handlers))
                or f"none; declare them in an app's {HANDLERS_MODULE}.py"
            )
            raise CommandError(f"no handler named {', '.join(unknown)}; known: {known}")
        if not names:
            raise CommandError(
                f"no handlers declared; decorate functions in an app's {HANDLERS_MODULE}.py "
                "with @domain_event_broker.django.subscribe(...)"
            )
        url = resolve_url("")
        if url is None:
            self.stdout.write("DOMAIN_EVENT_BROKER is None: no broker, nothing to consume")
            return
        subscriber = Subscriber(
            url,
            prefetch_count=options["prefetch"],
            workers=options["workers"],
            shutdown_grace_period=options["shutdown_grace_period"],
        )
        for name in names:
            registration = handlers[name]
            subscriber.register(
                registration.django_handler(),
                registration.name,
                registration.binding_keys,
                **registration.options,
            )
        self.stdout.write(f"consuming for {', '.join(names)} on {mask_url(url)}")
        self.stdout.flush()
        subscriber.start_consuming(timeout=options["timeout"])
        self.stdout.write("stopped")
