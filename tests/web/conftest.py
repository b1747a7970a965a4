"""Fixtures for the web page tests (the node's log and publisher fixtures)."""

from tests.node.conftest import log, publisher

__all__ = ["log", "publisher"]
