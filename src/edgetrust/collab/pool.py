"""Simulated secure aggregation clients in worker processes, for rounds on several cores.

The in-process driver (`collab.local`) runs every simulated client in one Python process, so a
100-client round pays each client's X25519 agreements and Ed25519 checks one after another. A
`ClientPool` forks worker processes that each own a share of the clients (their state, keys and
inputs are inherited at the fork, never pickled); each protocol stage the driver sends every
worker the server's messages in their wire encoding and gets the clients' replies back the same
way, so a worker's clients are exactly as isolated from the server as devices on a network.

Written by hand because the clients are stateful across the five stages: a task pool
(`concurrent.futures`) would have to ship each client's secrets to a fresh task every stage.
Linux only (it relies on `fork`); `processes` of 1 runs nothing here.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust import errors
from edgetrust.collab.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    ForwardedShares,
    KeyDirectory,
    MaskedInput,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from edgetrust.collab.secagg import SecAggClient, Stage
from edgetrust.errors import Error, InvalidInputError

__all__ = ["ClientPool", "run_client_stage"]

_REPLY: dict[Stage, Any] = {
    Stage.ADVERTISE: AdvertiseKeys,
    Stage.SHARE: ShareKeys,
    Stage.MASK: MaskedInput,
    Stage.CONSISTENCY: ConsistencySignature,
    Stage.UNMASK: UnmaskResponse,
}
_REQUEST: dict[Stage, Any] = {
    Stage.SHARE: KeyDirectory,
    Stage.MASK: ForwardedShares,
    Stage.CONSISTENCY: ConsistencyRequest,
    Stage.UNMASK: UnmaskRequest,
}


def run_client_stage(
    client: SecAggClient, stage: Stage, request: Any, vector: npt.NDArray[np.uint32] | None
) -> Any:
    """One client's step of a stage: its reply to the server's `request` (None to advertise)."""
    if stage is Stage.ADVERTISE:
        return client.advertise_keys()
    if stage is Stage.SHARE:
        return client.share_keys(request)
    if stage is Stage.MASK:
        if vector is None:
            raise InvalidInputError("a client has no input to mask")
        return client.masked_input(request, vector)
    if stage is Stage.CONSISTENCY:
        return client.consistency(request)
    return client.unmask(request)


def _serve(
    conn: Connection,
    clients: Mapping[str, SecAggClient],
    inputs: Mapping[str, npt.NDArray[np.uint32]],
) -> None:
    """A worker's loop: run each stage for the clients asked, reply with bytes and times."""
    while True:
        job = conn.recv()
        if job is None:
            return
        stage, requests = Stage(job[0]), job[1]
        try:
            replies = {}
            for did, data in requests.items():
                start = time.perf_counter()
                request = None if data is None else _REQUEST[stage].from_bytes(data)
                msg = run_client_stage(clients[did], stage, request, inputs.get(did))
                replies[did] = (msg.to_bytes(), time.perf_counter() - start)
            conn.send(("ok", replies))
        except Error as exc:
            conn.send(("error", type(exc).__name__, str(exc)))
        except Exception:  # a bug in a worker: hand the parent the traceback, then stop
            conn.send(("crash", "", traceback.format_exc()))
            return


class ClientPool:
    """Worker processes that each own a fixed share of the clients for one round.

    Use as a context manager; `stage` runs one protocol stage for the clients named.
    """

    def __init__(
        self,
        clients: Mapping[str, SecAggClient],
        inputs: Mapping[str, npt.NDArray[np.uint32]],
        processes: int,
    ) -> None:
        if processes < 2:
            raise InvalidInputError("`processes` must be at least 2 for a pool")
        ctx = multiprocessing.get_context("fork")
        order = sorted(clients)
        self._owner: dict[str, int] = {}
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for w in range(min(processes, len(order))):
            mine = order[w::processes]
            self._owner.update(dict.fromkeys(mine, w))
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_serve,
                args=(child, {d: clients[d] for d in mine}, {d: inputs[d] for d in mine}),
                daemon=True,
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    def stage(
        self, stage: Stage, dids: Sequence[str], requests: Mapping[str, Any] | Any = None
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """Replies of `dids` at `stage` and each client's time in its worker.

        `requests` is one message for all (a broadcast), a mapping did → message, or None.
        A client's `edgetrust.errors` exception is raised again here with its type and message.
        """
        per_worker: list[dict[str, bytes | None]] = [{} for _ in self._conns]
        for did in dids:
            req = requests.get(did) if isinstance(requests, Mapping) else requests
            per_worker[self._owner[did]][did] = None if req is None else req.to_bytes()
        busy = [w for w, jobs in enumerate(per_worker) if jobs]
        for w in busy:
            self._conns[w].send((int(stage), per_worker[w]))
        replies: dict[str, Any] = {}
        seconds: dict[str, float] = {}
        failure: tuple[str, str, str] | None = None
        for w in busy:
            answer = self._conns[w].recv()
            if answer[0] != "ok":
                failure = failure or answer
                continue
            for did, (data, secs) in answer[1].items():
                replies[did] = _REPLY[stage].from_bytes(data)
                seconds[did] = secs
        if failure is not None:
            status, name, message = failure
            if status == "crash":
                raise RuntimeError(f"a client worker failed:\n{message}")
            kind = getattr(errors, name, None)
            if not (isinstance(kind, type) and issubclass(kind, Error)):
                kind = Error
            raise kind(message)
        # the server handles replies in client order, as the sequential driver does
        return {d: replies[d] for d in dids if d in replies}, seconds

    def close(self) -> None:
        """Stop the workers."""
        for conn in self._conns:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        for conn in self._conns:
            conn.close()

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
