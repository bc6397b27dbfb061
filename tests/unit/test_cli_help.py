"""Every option of `domain-events` says what it does, and what it is when not given."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from domain_event_broker.cli import build_parser


def _commands(
    parser: argparse.ArgumentParser, path: str = "domain-events"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:  # argparse offers no public walk of its subcommands
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                yield from _commands(command, f"{path} {name}")


def test_every_option_has_help_and_names_its_default() -> None:
    missing = []
    for path, parser in _commands(build_parser()):
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            option = f"{path} {action.option_strings[-1]}"
            if not action.help:
                missing.append(f"{option}: no help")
            takes_value = action.nargs != 0 and not isinstance(
                action, (argparse._StoreTrueAction, argparse._CountAction, argparse._HelpAction)
            )
            if takes_value and not action.required and "default" not in action.help.lower():
                missing.append(f"{option}: help does not say its default")
    assert missing == []
