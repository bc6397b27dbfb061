"""``manage.py replay_domain_event <subscriber>... [--all] [--interactive]``."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from .... import replay
from ....core.defaults import ANSWER_TIMEOUT


class Command(BaseCommand):
    help = "Move dead-lettered events back to the queue of the given subscribers."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("queue", nargs="+", type=str, help="subscriber names")
        parser.add_argument(
            "--all",
            action="store_true",
            dest="replay_all",
            default=False,
            help="Replay all events in the dead-letter queue.",
        )
        parser.add_argument(
            "--interactive",
            action="store_true",
            default=False,
            help="Show each event and ask: (R)eplay, (D)iscard or (L)eave.",
        )
        parser.add_argument(
            "--answer-timeout",
            type=float,
            default=ANSWER_TIMEOUT,
            help="With --interactive: seconds to wait for an answer before leaving the event.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        callback: replay.MessageCallback = replay.retry_event
        if options["interactive"]:
            callback = replay.interactive_callback(
                replay.read_stdin_line, self.stdout.write, options["answer_timeout"]
            )
        for queue in options["queue"]:
            if options["replay_all"]:
                remaining = replay.replay_all(queue, callback)
            else:
                remaining = replay.replay_event(queue, callback)
            self.stdout.write(f"{remaining} dead-lettered events remaining for {queue}")
