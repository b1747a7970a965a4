"""The attribution section of the data-owner page: each requester's share of the owner's
logged uses (inline SVG bars and a table), and the federated rounds naming the owner as a
participant, counted per session from round configs whose signature verifies."""

from __future__ import annotations

import re
from collections import defaultdict

from fastapi.testclient import TestClient

from edgetrust.dsse import sign_envelope
from edgetrust.identity import Identity
from edgetrust.node.web.data_pages import _fl_round, attribution
from edgetrust.statement import IN_TOTO_PAYLOAD_TYPE, Subject, encode_statement
from tests.web.conftest import log, publisher, site, world
from tests.web.world import World

__all__ = ["log", "publisher", "site", "world"]


def test_share_of_uses_chart(site: TestClient, world: World) -> None:
    html = site.get(f"/data?owner={world.owner_did}").text
    section = html[html.index('id="attr"') :]
    assert '<svg viewBox="0 0 640' in section and "share-t" in section
    assert "100% of uses, 100% of ε" in section  # one requester ran both jobs
    assert re.search(r"<td>2</td><td>1</td>", section)  # 2 uses, ε 0.5 + 0.5
    assert "No federated round names this owner" in section
    assert "<script" not in section and "http" not in section.split("</section>")[0].replace(
        "https://", ""
    )  # nothing fetched from elsewhere


def _config(signer: Identity, session: str, rnd: int, participants: list[str]) -> bytes:
    pred = {"session": session, "round": rnd, "participants": participants}
    st = encode_statement(
        [Subject("model", "00" * 32)], "https://edgetrust.dev/fl-round-config/v1", pred
    )
    return sign_envelope(st, IN_TOTO_PAYLOAD_TYPE, signer).to_json()


def test_fl_rounds_attributed_per_session() -> None:
    coord, owner, other = (Identity.generate(n) for n in ("c", "o", "x"))
    found: dict[str, set[object]] = defaultdict(set)
    for data in (
        _config(coord, "s1", 1, [owner.did, other.did]),
        _config(coord, "s1", 2, [owner.did]),
        _config(coord, "s1", 2, [owner.did]),  # the same round twice counts once
        _config(coord, "s2", 1, [other.did]),  # not this owner
    ):
        _fl_round(data, owner.did, found)
    forged = bytearray(_config(coord, "s3", 1, [owner.did]))
    forged[forged.index(b'"sig":"') + 8] ^= 1  # a broken signature is not counted
    _fl_round(bytes(forged), owner.did, found)
    assert dict(found) == {"s1": {1, 2}}
    att = attribution([], found)
    assert att["fl"] == [("s1", 2)] and att["fl_chart"][0].text == "2 rounds"
    assert att["share_chart"] == []
