"""Broker settings: what they are (:mod:`.broker`), how a URL is read and shown without its
password (:mod:`.urls`), and the command-line options every command shares (:mod:`.arguments`).

Which broker the default (``''``) stands for is decided in
:mod:`domain_event_broker.settings`, where code sets ``BROKER``; the names of
this package stay importable from there.
"""
