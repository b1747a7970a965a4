from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from edgetrust.collab import messages as m
from edgetrust.collab.local import run_secagg_round
from edgetrust.collab.secagg import (
    RoundAbortedError,
    SecAggClient,
    SecAggConfig,
    Stage,
)
from edgetrust.encoding import canonical_json
from edgetrust.errors import ConflictError, InvalidInputError, VerificationError
from tests.collab.conftest import IDS, Round, make_identities

STAGES = [Stage.ADVERTISE, Stage.SHARE, Stage.MASK, Stage.CONSISTENCY, Stage.UNMASK]


# --- exact aggregates under dropout --------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("drops", [0, 1, 2, 3])
def test_exact_sum_with_dropouts_at_each_stage(
    make_round: Callable[..., Round], stage: Stage, drops: int
) -> None:
    r = make_round(7, 4)  # n - t = 3 dropouts at most
    dropped = {d: stage for d in r.dids[:drops]}
    res = run_secagg_round(r.server, r.clients, r.inputs, drop_at=dropped, wire=True)
    included = stage >= Stage.CONSISTENCY  # dropped after sending its masked input
    want = set(r.dids) if included else set(r.dids) - set(dropped)
    assert set(res.survivors) == want
    np.testing.assert_array_equal(res.total, r.expected(res.survivors))


def test_dropouts_spread_over_all_stages(make_round: Callable[..., Round]) -> None:
    r = make_round(9, 5, length=1000, modulus_bits=20)
    drops = dict(
        zip(r.dids[:4], [Stage.ADVERTISE, Stage.SHARE, Stage.MASK, Stage.UNMASK], strict=True)
    )
    res = run_secagg_round(r.server, r.clients, r.inputs, drop_at=drops)
    assert len(res.survivors) == 6
    np.testing.assert_array_equal(res.total, r.expected(res.survivors))
    assert set(res.dropped) == set(r.dids[:3])
    assert np.all(res.total < 2**20)


@pytest.mark.parametrize("stage", STAGES)
def test_below_threshold_aborts_cleanly(make_round: Callable[..., Round], stage: Stage) -> None:
    r = make_round(7, 4)
    drops = {d: stage for d in r.dids[:4]}  # 3 left, 4 needed
    with pytest.raises(RoundAbortedError) as info:
        run_secagg_round(r.server, r.clients, r.inputs, drop_at=drops)
    assert info.value.need == 4 and info.value.have == 3
    assert r.server.stage == Stage.DONE or info.value.stage == "unmask"


def test_secagg_plus_neighbourhoods(make_round: Callable[..., Round]) -> None:
    r = make_round(12, 4, length=300, neighbours=6, min_survivors=6)
    assert r.config.group_size == 7
    groups = {d: r.config.group(d) for d in r.dids}
    assert all(len(g) == 7 and d in g for d, g in groups.items())
    assert all(a in groups[b] for a in r.dids for b in groups[a])  # symmetric
    drops = {r.dids[0]: Stage.MASK, r.dids[5]: Stage.UNMASK, r.dids[9]: Stage.SHARE}
    res = run_secagg_round(r.server, r.clients, r.inputs, drop_at=drops, wire=True)
    np.testing.assert_array_equal(res.total, r.expected(res.survivors))
    assert len(res.survivors) == 10


def test_without_consistency_check(make_round: Callable[..., Round]) -> None:
    r = make_round(5, 3, consistency_check=False)
    res = run_secagg_round(r.server, r.clients, r.inputs, drop_at={r.dids[1]: Stage.MASK})
    np.testing.assert_array_equal(res.total, r.expected(res.survivors))


def test_commitments_are_signed_digests(make_round: Callable[..., Round]) -> None:
    r = make_round(4, 3)
    res = run_secagg_round(r.server, r.clients, r.inputs)
    for c in res.commitments:
        c.verify()
        forged = dataclasses.replace(c, vector=c.vector + np.uint32(1))
        with pytest.raises(VerificationError):
            forged.verify()


# --- privacy of the masked vector ----------------------------------------------------------


def test_masked_vector_is_uniform(make_round: Callable[..., Round]) -> None:
    """Chi-square over 256 buckets of the top byte: a constant input must look uniform."""
    r = make_round(3, 2, length=200_000)
    zero = np.zeros(200_000, np.uint32)
    ones = np.full(200_000, 0xFFFF0000, np.uint32)
    server = r.server
    for d in r.dids:
        server.receive_advertise(r.clients[d].advertise_keys())
    directory = server.close_advertise()
    for d in r.dids:
        server.receive_shares(r.clients[d].share_keys(directory))
    inbox = server.close_shares()
    ys = [
        r.clients[d].masked_input(inbox[d], x).vector
        for d, x in zip(r.dids, [zero, ones, zero], strict=True)
    ]
    for y in ys:
        for shift in (0, 24):
            counts = np.bincount((y >> shift) & 0xFF, minlength=256)
            assert stats.chisquare(counts).pvalue > 1e-6
    # and the two inputs are not distinguishable from each other (two-sample KS)
    assert stats.ks_2samp(ys[0][:20000], ys[1][:20000]).pvalue > 1e-6
    # a broken mask (input itself) is caught by the same test
    assert stats.chisquare(np.bincount(zero[:1000] & 0xFF, minlength=256)).pvalue < 1e-6


# --- the server cannot get both shares of one client ---------------------------------------


def _to_unmask(r: Round) -> tuple[m.UnmaskRequest, list[str]]:
    s = r.server
    for d in r.dids:
        s.receive_advertise(r.clients[d].advertise_keys())
    directory = s.close_advertise()
    for d in r.dids:
        s.receive_shares(r.clients[d].share_keys(directory))
    inbox = s.close_shares()
    live = list(r.dids)
    for d in live:
        s.receive_masked_input(r.clients[d].masked_input(inbox[d], r.inputs[d]))
    req = s.close_masked_input()
    assert isinstance(req, m.ConsistencyRequest)
    for d in live:
        s.receive_consistency(r.clients[d].consistency(req))
    return s.close_consistency(), live


def test_client_refuses_survivor_listed_as_dropped(make_round: Callable[..., Round]) -> None:
    r = make_round(5, 3)
    unmask, live = _to_unmask(r)
    victim = live[1]
    evil = dataclasses.replace(unmask, dropped=tuple(sorted({*unmask.dropped, victim})))
    with pytest.raises(VerificationError, match="both surviving and dropped"):
        r.clients[live[0]].unmask(evil)


def test_client_answers_one_unmask_request_only(make_round: Callable[..., Round]) -> None:
    r = make_round(5, 3)
    unmask, live = _to_unmask(r)
    client = r.clients[live[0]]
    first = client.unmask(unmask)
    assert {x.owner for x in first.self_mask_shares} == set(live)
    assert client.revealed == {d: "self-mask" for d in live}
    # the server now claims a survivor dropped, hoping for its key share too
    victim = live[1]
    second = m.UnmaskRequest(
        unmask.round_id,
        tuple(d for d in unmask.survivors if d != victim),
        (victim,),
        unmask.signatures,
    )
    with pytest.raises(ConflictError):
        client.unmask(second)


def test_equivocating_server_gets_no_key_share(make_round: Callable[..., Round]) -> None:
    """The server shows client A a view where V dropped, B a view where V survived."""
    r = make_round(5, 3)
    s = r.server
    for d in r.dids:
        s.receive_advertise(r.clients[d].advertise_keys())
    directory = s.close_advertise()
    for d in r.dids:
        s.receive_shares(r.clients[d].share_keys(directory))
    inbox = s.close_shares()
    for d in r.dids:
        s.receive_masked_input(r.clients[d].masked_input(inbox[d], r.inputs[d]))
    s.close_masked_input()
    a, b, victim, c, _ = r.dids
    view_all = m.ConsistencyRequest(r.config.round_id, tuple(r.dids))
    view_drop = m.ConsistencyRequest(r.config.round_id, tuple(d for d in r.dids if d != victim))
    sig_b = r.clients[b].consistency(view_all)
    sig_a = r.clients[a].consistency(view_drop)
    sig_c = r.clients[c].consistency(view_drop)
    # A is asked for V's key share, with signatures for its (dropped-V) view: only 2 of 3.
    evil = m.UnmaskRequest(r.config.round_id, view_drop.survivors, (victim,), (sig_a, sig_c))
    with pytest.raises(VerificationError, match="only 2 peers"):
        r.clients[a].unmask(evil)
    # Mixing in B's signature over the other view is caught.
    evil2 = dataclasses.replace(evil, signatures=(sig_a, sig_b, sig_c))
    with pytest.raises(VerificationError, match="different survivor list"):
        r.clients[a].unmask(evil2)
    assert r.clients[a].revealed == {}


def test_unmask_list_must_match_signed_list(make_round: Callable[..., Round]) -> None:
    r = make_round(5, 3)
    unmask, live = _to_unmask(r)
    evil = dataclasses.replace(unmask, survivors=tuple(live[:-1]), dropped=(live[-1],))
    with pytest.raises(VerificationError, match="differs from the one this client signed"):
        r.clients[live[0]].unmask(evil)


def test_forged_consistency_signature(make_round: Callable[..., Round]) -> None:
    r = make_round(5, 3)
    unmask, live = _to_unmask(r)
    sigs = list(unmask.signatures)
    sigs[1] = dataclasses.replace(sigs[1], signature=bytes(64))
    evil = dataclasses.replace(unmask, signatures=tuple(sigs))
    # the client might reach the threshold before the forged one; put it first
    evil = dataclasses.replace(evil, signatures=(sigs[1], *sigs[:1], *sigs[2:]))
    with pytest.raises(VerificationError, match="bad signature"):
        r.clients[live[2]].unmask(evil)


# --- tampering, replay, outsiders, wrong lengths -------------------------------------------


def test_tampered_advertisement_refused(make_round: Callable[..., Round]) -> None:
    r = make_round(4, 3)
    msg = r.clients[r.dids[0]].advertise_keys()
    forged = dataclasses.replace(msg, mask_public_key=os.urandom(32))
    with pytest.raises(VerificationError):
        r.server.receive_advertise(forged)
    r.server.receive_advertise(msg)
    with pytest.raises(ConflictError):
        r.server.receive_advertise(msg)  # replay


def test_server_swapping_a_peer_key_is_caught(make_round: Callable[..., Round]) -> None:
    r = make_round(4, 3)
    for d in r.dids:
        r.server.receive_advertise(r.clients[d].advertise_keys())
    directory = r.server.close_advertise()
    entries = list(directory.entries)
    entries[1] = dataclasses.replace(entries[1], cipher_public_key=os.urandom(32))
    evil = dataclasses.replace(directory, entries=tuple(entries))
    victim = r.dids[0] if entries[1].sender != r.dids[0] else r.dids[2]
    with pytest.raises(VerificationError):
        r.clients[victim].share_keys(evil)


def test_directory_without_own_keys_or_with_outsider(make_round: Callable[..., Round]) -> None:
    r = make_round(4, 3)
    for d in r.dids:
        r.server.receive_advertise(r.clients[d].advertise_keys())
    directory = r.server.close_advertise()
    me = directory.entries[0].sender
    missing = dataclasses.replace(directory, entries=directory.entries[1:])
    with pytest.raises(VerificationError, match="own keys"):
        r.clients[me].share_keys(missing)
    outsider = make_identities(1, "outsider")[0]
    foreign = m.AdvertiseKeys(r.config.round_id, outsider.did, os.urandom(32), os.urandom(32)).sign(
        outsider
    )
    with pytest.raises(InvalidInputError, match="not in the round"):
        r.clients[me].share_keys(
            dataclasses.replace(directory, entries=(*directory.entries, foreign))
        )


def test_tampered_sealed_share_refused(make_round: Callable[..., Round]) -> None:
    r = make_round(4, 3)
    for d in r.dids:
        r.server.receive_advertise(r.clients[d].advertise_keys())
    directory = r.server.close_advertise()
    for d in r.dids:
        r.server.receive_shares(r.clients[d].share_keys(directory))
    inbox = r.server.close_shares()
    target = r.dids[0]
    box = inbox[target]
    ct = bytearray(box.shares[0].ciphertext)
    ct[5] ^= 1
    items = (m.EncryptedShare(box.shares[0].peer, bytes(ct)), *box.shares[1:])
    with pytest.raises(VerificationError, match="does not open"):
        r.clients[target].masked_input(dataclasses.replace(box, shares=items), r.inputs[target])
    # a share relabelled as coming from another peer does not open either
    swapped = (
        m.EncryptedShare(box.shares[1].peer, box.shares[0].ciphertext),
        m.EncryptedShare(box.shares[0].peer, box.shares[1].ciphertext),
        *box.shares[2:],
    )
    with pytest.raises(VerificationError):
        r.clients[target].masked_input(
            dataclasses.replace(box, shares=tuple(sorted(swapped, key=lambda e: e.peer))),
            r.inputs[target],
        )


def test_masked_input_checks(make_round: Callable[..., Round]) -> None:
    r = make_round(4, 3, length=16)
    adverts = {d: r.clients[d].advertise_keys() for d in r.dids}
    for d in r.dids:
        r.server.receive_advertise(adverts[d])
    directory = r.server.close_advertise()
    for d in r.dids:
        r.server.receive_shares(r.clients[d].share_keys(directory))
    inbox = r.server.close_shares()
    a = r.dids[0]
    with pytest.raises(InvalidInputError, match="16"):
        r.clients[a].masked_input(inbox[a], np.zeros(15, np.uint32))
    with pytest.raises(InvalidInputError, match="uint32"):
        r.clients[a].masked_input(inbox[a], np.zeros(16, np.int64))
    with pytest.raises(InvalidInputError, match="another client"):
        r.clients[a].masked_input(inbox[r.dids[1]], r.inputs[a])
    msg = r.clients[a].masked_input(inbox[a], r.inputs[a])
    # wrong length at the server, with a valid signature
    short = m.MaskedInput(msg.round_id, a, msg.vector[:8]).sign(IDS[[i.did for i in IDS].index(a)])
    with pytest.raises(InvalidInputError, match="16"):
        r.server.receive_masked_input(short)
    # tampered vector, old signature
    with pytest.raises(VerificationError):
        r.server.receive_masked_input(dataclasses.replace(msg, vector=msg.vector ^ np.uint32(1)))
    # tampered bytes on the wire
    wire = bytearray(msg.to_bytes())
    wire[-1] ^= 1
    with pytest.raises(VerificationError, match="digest"):
        m.MaskedInput.from_bytes(bytes(wire))
    r.server.receive_masked_input(msg)
    with pytest.raises(ConflictError):
        r.server.receive_masked_input(msg)
    # a message of another stage / round
    with pytest.raises(ConflictError):
        r.server.receive_advertise(adverts[r.dids[1]])


def test_other_round_and_outsider_refused(make_round: Callable[..., Round]) -> None:
    r1, r2 = make_round(4, 3), make_round(4, 3)
    msg = r2.clients[r2.dids[0]].advertise_keys()
    with pytest.raises(InvalidInputError, match="another round"):
        r1.server.receive_advertise(msg)
    outsider = make_identities(1, "outsider")[0]
    foreign = m.AdvertiseKeys(
        r1.config.round_id, outsider.did, os.urandom(32), os.urandom(32)
    ).sign(outsider)
    with pytest.raises(InvalidInputError, match="not a participant"):
        r1.server.receive_advertise(foreign)
    with pytest.raises(InvalidInputError, match="not a participant"):
        SecAggClient(config=r1.config, identity=outsider)


def test_late_client_refused(make_round: Callable[..., Round]) -> None:
    r = make_round(4, 3)
    late = r.dids[3]
    for d in r.dids[:3]:
        r.server.receive_advertise(r.clients[d].advertise_keys())
    directory = r.server.close_advertise()
    with pytest.raises(ConflictError, match="past stage"):
        r.server.receive_advertise(r.clients[late].advertise_keys())
    with pytest.raises(VerificationError, match="own keys"):
        r.clients[late].share_keys(directory)  # its keys are not listed: it was refused
    r.clients[r.dids[0]].share_keys(directory)
    with pytest.raises(ConflictError):
        r.clients[r.dids[0]].share_keys(directory)


def test_shares_to_wrong_peers_refused(make_round: Callable[..., Round]) -> None:
    r = make_round(4, 3)
    for d in r.dids:
        r.server.receive_advertise(r.clients[d].advertise_keys())
    directory = r.server.close_advertise()
    msg = r.clients[r.dids[0]].share_keys(directory)
    who = IDS[[i.did for i in IDS].index(r.dids[0])]
    partial = dataclasses.replace(msg, shares=msg.shares[1:]).sign(who)
    with pytest.raises(InvalidInputError, match="one share to each"):
        r.server.receive_shares(partial)
    short = dataclasses.replace(
        msg, shares=(m.EncryptedShare(msg.shares[0].peer, b"x"), *msg.shares[1:])
    ).sign(who)
    with pytest.raises(InvalidInputError, match="wrong length"):
        r.server.receive_shares(short)


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"round_id": b"short"}, "`round_id`"),
        ({"participants": (IDS[0].did,)}, "`participants`"),
        ({"participants": (IDS[0].did, IDS[0].did, IDS[1].did)}, "`participants`"),
        ({"threshold": 2}, "`threshold` must be more than half"),
        ({"threshold": 6}, "`threshold` 6 exceeds"),
        ({"vector_length": 0}, "`vector_length`"),
        ({"modulus_bits": 40}, "`modulus_bits`"),
        ({"neighbours": 3}, "`neighbours`"),
        ({"min_survivors": 2}, "`min_survivors`"),
        ({"min_survivors": 9}, "`min_survivors`"),
    ],
)
def test_config_validation_names_parameter(change: dict[str, object], name: str) -> None:
    base: dict[str, object] = {
        "round_id": os.urandom(32),
        "participants": tuple(i.did for i in IDS[:5]),
        "threshold": 3,
        "vector_length": 10,
    }
    with pytest.raises(InvalidInputError, match=name):
        SecAggConfig(**{**base, **change})  # type: ignore[arg-type]


def test_config_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        SecAggConfig(os.urandom(32), (IDS[0].did, IDS[1].did), 2, 1)  # type: ignore[misc]


# --- wire format ---------------------------------------------------------------------------


def test_every_message_round_trips_and_headers_are_rfc8785(
    make_round: Callable[..., Round],
) -> None:
    r = make_round(4, 3, length=8)
    seen: list[m._Message] = []
    s = r.server
    for d in r.dids:
        msg = r.clients[d].advertise_keys()
        seen.append(msg)
        s.receive_advertise(msg)
    directory = s.close_advertise()
    seen.append(directory)
    for d in r.dids:
        msg2 = r.clients[d].share_keys(directory)
        seen.append(msg2)
        s.receive_shares(msg2)
    inbox = s.close_shares()
    seen += list(inbox.values())
    for d in r.dids:
        msg3 = r.clients[d].masked_input(inbox[d], r.inputs[d])
        seen.append(msg3)
        s.receive_masked_input(msg3)
    req = s.close_masked_input()
    seen.append(req)
    assert isinstance(req, m.ConsistencyRequest)
    for d in r.dids:
        sig = r.clients[d].consistency(req)
        seen.append(sig)
        s.receive_consistency(sig)
    unmask = s.close_consistency()
    seen.append(unmask)
    for d in r.dids:
        resp = r.clients[d].unmask(unmask)
        seen.append(resp)
        s.receive_unmask(resp)
    s.finish()
    for msg in seen:
        data = msg.to_bytes()
        again = m.decode_message(data)
        assert type(again) is type(msg) and again.to_bytes() == data
        hlen = int.from_bytes(data[5:9], "big")
        assert data[9 : 9 + hlen] == canonical_json(json.loads(data[9 : 9 + hlen]))
        for cut in (
            (0, 4, 8, 9 + hlen // 2, len(data) - 1)
            if not isinstance(msg, m.MaskedInput)
            else (0, 8)
        ):
            with pytest.raises(InvalidInputError):
                m.decode_message(data[:cut])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_refused_with_typed_errors(data: bytes) -> None:
    for blob in (data, m.MAGIC + data, m.MAGIC + len(data).to_bytes(4, "big") + data):
        with pytest.raises((InvalidInputError, VerificationError)):
            m.decode_message(blob)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["kind", "round", "sender", "cipherKey", "maskKey", "sig", "x"]),
        st.one_of(
            st.text(max_size=5), st.integers(), st.none(), st.lists(st.integers(), max_size=2)
        ),
        max_size=7,
    )
)
def test_malformed_headers_refused(header: dict[str, object]) -> None:
    header.setdefault("kind", "advertise-keys")
    body = json.dumps(header).encode()
    with pytest.raises((InvalidInputError, VerificationError)):
        m.decode_message(m.MAGIC + len(body).to_bytes(4, "big") + body)


def test_oversized_message_refused() -> None:
    with pytest.raises(InvalidInputError, match="limit"):
        m.decode_message(m.MAGIC + bytes(100), max_bytes=50)


def test_unknown_kind_and_wrong_kind() -> None:
    body = json.dumps({"kind": "nope"}).encode()
    frame = m.MAGIC + len(body).to_bytes(4, "big") + body
    with pytest.raises(InvalidInputError, match="unknown message kind"):
        m.decode_message(frame)
    with pytest.raises(InvalidInputError, match="expected a masked-input"):
        m.MaskedInput.from_bytes(frame)


def test_stage_order_enforced(make_round: Callable[..., Round]) -> None:
    r = make_round(4, 3)
    with pytest.raises(InvalidInputError, match="stage advertise"):
        r.server.close_shares()
    client = r.clients[r.dids[0]]
    with pytest.raises(InvalidInputError, match="stage advertise"):
        client.unmask(m.UnmaskRequest(r.config.round_id, (), ()))


def test_client_state_survives_export_between_stages(make_round: Callable[..., Round]) -> None:
    """As in the Flower driver, each stage runs on a client rebuilt from its exported state."""
    r = make_round(5, 3)
    ident = {i.did: i for i in r.ids}

    def fresh(d: str) -> SecAggClient:
        return SecAggClient.from_state(
            r.clients[d].export_state(), config=r.config, identity=ident[d]
        )

    s = r.server
    for d in r.dids:
        s.receive_advertise(r.clients[d].advertise_keys())
    directory = s.close_advertise()
    for d in r.dids:
        r.clients[d] = fresh(d)
        s.receive_shares(r.clients[d].share_keys(directory))
    inbox = s.close_shares()
    for d in r.dids[:4]:
        r.clients[d] = fresh(d)
        s.receive_masked_input(r.clients[d].masked_input(inbox[d], r.inputs[d]))
    req = s.close_masked_input()
    assert isinstance(req, m.ConsistencyRequest)
    for d in r.dids[:4]:
        r.clients[d] = fresh(d)
        s.receive_consistency(r.clients[d].consistency(req))
    unmask = s.close_consistency()
    for d in r.dids[:4]:
        r.clients[d] = fresh(d)
        s.receive_unmask(r.clients[d].unmask(unmask))
    res = s.finish()
    np.testing.assert_array_equal(res.total, r.expected(res.survivors))
    again = fresh(r.dids[0])
    with pytest.raises(ConflictError):
        again.unmask(unmask)  # the "already answered" state survives the export too
    with pytest.raises(InvalidInputError, match="corrupt"):
        SecAggClient.from_state(b"{}", config=r.config, identity=ident[r.dids[0]])
