"""The edgetrust log node: an HTTP face on the embedded transparency log (FastAPI).

Read API: C2SP tlog-tiles (``/checkpoint``, ``/tile/<L>/<N>[.p/<W>]``,
``/tile/entries/<N>[.p/<W>]``), so standard tiles clients and witnesses can follow the log,
plus JSON conveniences (``/v1/entries/{index}`` with an inclusion proof,
``/v1/proofs/consistency``). Write API: ``POST /v1/entries`` and ``POST /v1/entries:batch``,
which accept only DSSE envelopes of registered in-toto predicate types whose every signature
verifies. The node is thin: validation is `edgetrust.node.entries.prepare_entry`, sequencing
and proofs are `edgetrust.log.service.Log`.

This module only assembles the app: it owns the lifespan (open the log, the verify pool, the
tile publisher) and the list of mounted routers, one per service, in `_mount`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from edgetrust.capture.http import capture_router
from edgetrust.log.publish import TilePublisher
from edgetrust.log.service import Log
from edgetrust.node._http import install_error_handlers
from edgetrust.node.core import NodeCore
from edgetrust.node.metrics import metrics_router
from edgetrust.node.routes_log import log_router
from edgetrust.node.settings import NodeSettings
from edgetrust.node.web import add_web
from edgetrust.profiles import set_future_skew

__all__ = ["create_app"]


def create_app(
    log: Log | None = None,
    *,
    settings: NodeSettings | None = None,
    on_append: Callable[[], object] | None = None,
) -> FastAPI:
    """Build the node's ASGI app around `log` (or the embedded log at ``settings.home``).

    `on_append` is called (in a worker thread) after each committed group or batch, e.g.
    ``AutoAnchor(...).maybe_anchor`` to anchor checkpoints on a chain every N entries; its
    failures are logged and never refuse an entry that is already logged.

    When `log` is given, the caller owns it (and closes it); otherwise the app opens the log
    at startup and closes it at shutdown.
    """
    cfg = settings or NodeSettings()
    set_future_skew(cfg.future_skew)
    holder: dict[str, NodeCore] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = None
        if cfg.verify_workers:
            # Fork the workers before the log starts its threads, and warm them up, so the
            # children inherit the registered predicate types and no lock held by a thread.
            pool = ProcessPoolExecutor(cfg.verify_workers)
            list(pool.map(abs, range(cfg.verify_workers)))
        own = log is None
        the_log = log or Log.open(
            cfg.home,
            origin=cfg.origin,
            batch_size=cfg.batch_size,
            max_delay=cfg.max_delay,
            store=cfg.store,
        )
        holder["node"] = NodeCore(the_log, cfg, pool, on_append)
        try:
            if cfg.publish is not None:
                holder["node"].publisher = TilePublisher(
                    the_log, cfg.publish, interval=cfg.publish_interval
                )
            yield
        finally:
            if holder["node"].publisher is not None:
                holder["node"].publisher.close()
            if own:
                the_log.close()
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    app = FastAPI(
        title="edgetrust log node",
        version="1",
        summary="A transparency log of signed AI receipts and model cards (C2SP tlog-tiles).",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)

    def node() -> NodeCore:
        return holder["node"]

    _mount(app, node, cfg, on_append)
    return app


def _mount(
    app: FastAPI,
    node: Callable[[], NodeCore],
    cfg: NodeSettings,
    on_append: Callable[[], object] | None,
) -> None:
    """Mount every service's router; each service owns its routes in its own package.

    A router reaches the log through a getter (`node().log`), since the log opens at startup,
    after the routes are declared. Optional services are imported only when enabled, and
    inside this function: they import `edgetrust.node._http`, so importing them at the top of
    this module would be an import loop waiting to happen.
    """
    app.include_router(metrics_router(lambda: node().metrics))
    if cfg.data:
        from edgetrust.data.http import node_data_router

        app.include_router(node_data_router(lambda: node().log, cfg.home))
    app.include_router(log_router(node, cfg))
    add_web(app, lambda: node().log, anchor=getattr(on_append, "__self__", None))
    app.include_router(capture_router(lambda: node().log))
    from edgetrust.human.http import human_router

    human = human_router(lambda: node().log)
    app.state.human = human.service  # type: ignore[attr-defined]  # the review page reads it
    app.include_router(human)
    if cfg.traces:
        from edgetrust.node.routes_traces import trace_router

        app.include_router(trace_router(cfg))
