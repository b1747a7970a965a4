"""The receipt page: verify a dropped bundle file, or a receipt logged here, step by step.

Verification is `Verifier.report`, the same numbered steps as ``edgetrust verify``, run by the
node's verifier (trusting this node's log key and, when the node has a home, its model
registry); the page shows each step as it came out and never a step it did not run. The
upload is a CSRF-protected multipart form (drag-and-drop in ``static/receipt.js`` only fills
the same form), read with a byte limit (413 beyond it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import UploadFile

from edgetrust.dsse import parse_envelope
from edgetrust.errors import Error, InvalidInputError, NotFoundError
from edgetrust.models import ModelRegistry
from edgetrust.node._http import read_body
from edgetrust.node.web._page import (
    CsrfError,
    WebContext,
    check_csrf,
    error_page,
    render,
    str_param,
)
from edgetrust.node.web.charts import proof_path
from edgetrust.node.web.describe import describe_entry
from edgetrust.receipts import Bundle, LogProof, parse_bundles
from edgetrust.verify.verifier import StepReport, Verifier

__all__ = ["ReceiptView", "bundle_for_entry", "receipt_view", "router"]

TOP_CLASSES = 3
MAX_CLASSES = 10_000
"""An output is shown as classes when it is one row of at most this many scores."""


@dataclass(frozen=True)
class ReceiptView:
    """What the page shows about one bundle."""

    report: StepReport
    fields: tuple[tuple[str, str], ...]
    """(label, value) of the receipt, read from its predicate (trusted only if step 1-2 pass)."""
    top: tuple[tuple[str, tuple[tuple[int, str], ...]], ...]
    """Per classifier output: its name and the top classes with their scores."""
    path: tuple[Any, ...]
    """The inclusion path (`charts.PathLevel`) of the bundle's log proof, if it has one."""
    log: LogProof | None
    batch: int
    """How many receipts the file held (the page verifies the first)."""


def bundle_for_entry(log: Any, index: int) -> Bundle:
    """A bundle for the receipt logged at `index`, with a proof to the latest checkpoint.

    Raises:
        NotFoundError: no such entry.
        InvalidInputError: the entry is not a single receipt (a batch entry holds no item).
    """
    size = log.size()
    if not 0 <= index < size:
        raise NotFoundError(f"entry {index} is beyond the log's size {size}")
    data = log.entry(index)
    view = describe_entry(index, data)
    if view.kind != "receipt":
        raise InvalidInputError(
            f"entry {index} is a {view.kind}, not a single receipt (a batch item's bundle "
            "comes from the device that issued it: drop that file)"
        )
    note = log.checkpoint()
    cp = log.latest()
    proof = LogProof(cp.origin, index, cp.size, tuple(log.inclusion_proof(index, cp.size)), note)
    return Bundle(parse_envelope(data, max_bytes=len(data)), log=proof)


def _top_classes(
    outputs: Mapping[str, Any] | None,
) -> list[tuple[str, tuple[tuple[int, str], ...]]]:
    out = []
    for name, value in (outputs or {}).items():
        arr = np.asarray(value)
        if arr.dtype.kind != "f" or arr.size == 0 or arr.size > MAX_CLASSES:
            continue
        if arr.ndim == 2 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 1 or arr.size < 2:
            continue
        order = np.argsort(-arr, kind="stable")[:TOP_CLASSES]
        out.append((name, tuple((int(k), f"{float(arr[k]):.4g}") for k in order)))
    return out


def receipt_view(verifier: Verifier, bundles: list[Bundle], model_names: Any = None) -> ReceiptView:
    """Verify the first of `bundles` with `verifier` and gather what the page shows."""
    bundle = bundles[0]
    report = verifier.report(bundle)
    fields: list[tuple[str, str]] = []
    top: list[tuple[str, tuple[tuple[int, str], ...]]] = []
    receipt = report.receipt
    if receipt is not None:
        name = model_names(receipt.model_digest) if model_names else ""
        fields += [
            ("Model", f"{name} ({receipt.model_digest})" if name else receipt.model_digest),
            ("Issuer", receipt.issuer),
            ("Issued at", receipt.issued_at),
            ("Executor", str(receipt.executor.get("name", ""))),
            ("Input commitment", receipt.input_commitment),
            ("Output digest", receipt.output_digest),
        ]
        if receipt.is_batch and bundle.item is not None:
            fields.append(("Batch item", str(bundle.item.index)))
        top = _top_classes(receipt.outputs)
        if receipt.outputs is None:
            fields.append(("Output", "private (only its digest is in the receipt)"))
    path: list[Any] = []
    if bundle.log is not None:
        try:
            path = proof_path(
                bundle.leaf_data(),
                bundle.log.index,
                bundle.log.tree_size,
                bundle.log.inclusion_proof,
            )
        except Error:
            path = []  # a malformed proof: step 6 says why
    return ReceiptView(report, tuple(fields), tuple(top), tuple(path), bundle.log, len(bundles))


def router(ctx: WebContext) -> APIRouter:
    """``GET /receipt`` (the form, or ``?index=N`` for a logged receipt), ``POST /receipt``."""
    r = APIRouter(include_in_schema=False)

    def verifier() -> Verifier:
        home = ctx.node_home()
        registry = ModelRegistry(home) if home is not None else None
        return Verifier(log_keys=[ctx.log().verifier_key], registry=registry)

    def model_name(digest: str) -> str:
        index, indexed, _ = ctx.synced_index()
        for row in index.by_digest(digest, before=indexed, limit=20):
            if row.kind == "model card":
                return row.summary.split(" · ")[0]
        return ""

    def page(
        request: Request,
        view: ReceiptView | None,
        error: str = "",
        status: int = 200,
        source: str = "",
    ) -> HTMLResponse:
        return render(
            request,
            "receipt.html",
            {
                "title": "Verify a receipt",
                "v": view,
                "error": error,
                "source": source,
                "max_upload": ctx.max_upload,
                "vkey": ctx.log().verifier_key,
            },
            status=status,
        )

    @r.get("/receipt", response_class=HTMLResponse)
    def form(request: Request) -> HTMLResponse:
        try:
            raw = str_param(request, "index")
            if not raw:
                return page(request, None)
            if not raw.isdigit() or len(raw) > 19:
                raise InvalidInputError("index must be a non-negative integer")
            bundle = bundle_for_entry(ctx.log(), int(raw))
            view = receipt_view(verifier(), [bundle], model_name)
        except Error as exc:
            return error_page(request, exc)
        return page(request, view, source=f"log entry {int(raw)}")

    @r.post("/receipt", response_class=HTMLResponse)
    async def upload(request: Request) -> Response:
        try:
            body = await read_body(request, ctx.max_upload)
        except Error as exc:
            return error_page(request, exc)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=4)
            check_csrf(request, form.get("csrf_token"))
            upload = form.get("bundle")
            if not isinstance(upload, UploadFile):
                raise InvalidInputError("choose a bundle file (.json) to verify")
            data = await upload.read()
            filename = (upload.filename or "")[:100]
        except CsrfError as exc:
            return error_page(request, exc)
        except Error as exc:
            return page(request, None, exc.diagnostics(), 400)
        except Exception:  # starlette's multipart parser: a malformed form body
            return page(request, None, "the upload is not a valid form; choose the file again", 400)
        try:
            bundles = parse_bundles(data, max_bytes=ctx.max_upload)
        except Error as exc:
            return page(
                request,
                None,
                f"{filename or 'the file'} is not a receipt bundle: {exc.diagnostics()}",
                400,
            )
        view = receipt_view(verifier(), bundles, model_name)
        return page(request, view, source=f"uploaded file {filename}")

    return r
