"""The node's web pages: server-rendered HTML (Jinja2) over the same library calls as the CLI.

`add_web(app, get_log)` mounts the vendored static files and every page module in `PAGES`;
a new page is one module with ``router(ctx: WebContext) -> APIRouter`` added to `PAGES`
(see docs/web.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from edgetrust.log.service import Log
from edgetrust.node.web import data_pages, disputes, log_pages, receipt, review, rounds, witnesses
from edgetrust.node.web._page import WebContext

__all__ = ["PAGES", "add_web"]

PAGES = [log_pages, receipt, rounds, disputes, data_pages, review, witnesses]
"""Page modules, each with ``router(ctx) -> APIRouter``."""


def _index_path(log: Log) -> str:
    store_path = getattr(log.store, "path", None)
    if isinstance(store_path, Path):
        return str(store_path.with_name("explorer.db"))
    return ":memory:"


def add_web(app: FastAPI, get_log: Callable[[], Log], *, anchor: object = None) -> WebContext:
    """Serve the pages and ``/static/`` from `app`, reading the log `get_log` returns.

    `anchor` is the node's `AutoAnchor` when it anchors on a chain (the log page shows it).
    Returns the pages' context (its `index()` is the explorer index).
    """
    ctx = WebContext(get_log=get_log, index_path=_index_path, anchor=anchor)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    for module in PAGES:
        app.include_router(module.router(ctx))
    return ctx
