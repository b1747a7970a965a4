"""Fixtures for the web page tests: the node's log and publisher fixtures, and a node home
holding real entries of every kind (`world.build_world`, built once per session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from edgetrust.log.service import Log
from edgetrust.node.app import create_app
from edgetrust.node.settings import NodeSettings
from tests.node.conftest import log, publisher
from tests.web.world import World, build_world

__all__ = ["log", "publisher", "site", "world"]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("web-world"))


@pytest.fixture
def site(world: World) -> Iterator[TestClient]:
    """The node's app over the world's log (in process)."""
    with Log.open(world.home) as the_log:
        app = create_app(the_log, settings=NodeSettings(rate=0))
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client
