"""The in-process driver: N simulated clients and the server in one Python process.

It moves the protocol's messages between the state machines of `collab.secagg` (optionally
through their wire encoding), simulating clients that drop out at any stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import numpy as np
import numpy.typing as npt

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
from edgetrust.collab.secagg import SecAggClient, SecAggResult, SecAggServer, Stage

__all__ = ["run_secagg_round"]

M = TypeVar(
    "M",
    AdvertiseKeys,
    KeyDirectory,
    ShareKeys,
    ForwardedShares,
    MaskedInput,
    ConsistencyRequest,
    ConsistencySignature,
    UnmaskRequest,
    UnmaskResponse,
)


def _carry(msg: M, wire: bool) -> M:
    """Send a message over the 'network': through its byte encoding when `wire` is set."""
    return type(msg).from_bytes(msg.to_bytes()) if wire else msg


def run_secagg_round(
    server: SecAggServer,
    clients: Mapping[str, SecAggClient],
    inputs: Mapping[str, npt.NDArray[np.uint32]],
    *,
    drop_at: Mapping[str, Stage] | None = None,
    wire: bool = False,
) -> SecAggResult:
    """Run one secure aggregation round among `clients`; return the server's result.

    A client listed in `drop_at` goes silent from that stage on (it sends neither that stage's
    message nor any later one), as a device that lost its connection would.

    Raises:
        RoundAbortedError: too few clients remained at some stage.
    """
    drops = dict(drop_at or {})

    def alive(did: str, stage: Stage) -> bool:
        return did not in drops or drops[did] > stage

    live = [d for d in sorted(clients) if alive(d, Stage.ADVERTISE)]
    for d in live:
        server.receive_advertise(_carry(clients[d].advertise_keys(), wire))
    directory = _carry(server.close_advertise(), wire)
    live = [d for d in live if alive(d, Stage.SHARE)]
    for d in live:
        server.receive_shares(_carry(clients[d].share_keys(directory), wire))
    inboxes = server.close_shares()
    live = [d for d in live if d in inboxes and alive(d, Stage.MASK)]
    for d in live:
        forwarded = _carry(inboxes[d], wire)
        server.receive_masked_input(_carry(clients[d].masked_input(forwarded, inputs[d]), wire))
    request = server.close_masked_input()
    live = [d for d in live if alive(d, Stage.CONSISTENCY)]
    if isinstance(request, ConsistencyRequest):
        request = _carry(request, wire)
        for d in live:
            server.receive_consistency(_carry(clients[d].consistency(request), wire))
        unmask = _carry(server.close_consistency(), wire)
    else:
        unmask = _carry(request, wire)
    live = [d for d in live if alive(d, Stage.UNMASK)]
    for d in live:
        server.receive_unmask(_carry(clients[d].unmask(unmask), wire))
    return server.finish()
