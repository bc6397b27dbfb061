"""Benchmarks: every figure of our public API beside raw pika (or aio-pika), measured in one run.

Run ``make bench`` (or ``python -m bench.run --help``).
"""
