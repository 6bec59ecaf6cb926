"""Streaming at scale: the real bot against the local fakes, side by side with the usual approaches.

Run with `make bench` (or `python -m bench --help`); not part of the test suite.
"""
