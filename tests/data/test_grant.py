"""Consent grants: chains, attenuation-only delegation, revocation and freshness."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.data.grant import (
    ACTIONS,
    Grant,
    GrantError,
    RevocationView,
    check_narrows,
    delegate,
    grant_digest,
    issue_grant,
    read_grant,
    revoke,
    verify_chain,
)
from edgetrust.dsse import Envelope, parse_envelope
from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.identity import Identity

OWNER = Identity.from_seed(b"\x01" * 32, "owner")
ALICE = Identity.from_seed(b"\x02" * 32, "alice")
BOB = Identity.from_seed(b"\x03" * 32, "bob")
DS = "sha256:" + "ab" * 32
OTHER_DS = "sha256:" + "cd" * 32
NOW = 1_800_000_000


def fresh() -> RevocationView:
    v = RevocationView(max_age=60)
    v.observe(0, [], size=0, at=NOW)
    return v


def root(**kw: object) -> Envelope:
    args: dict[str, object] = {
        "audience": ALICE.did,
        "dataset": DS,
        "actions": ["stats", "train"],
        "not_before": NOW - 100,
        "expires": NOW + 1000,
        "max_uses": 10,
        "eps_per_use": 1.0,
        "eps_total": 5.0,
        "min_group": 5,
    }
    args.update(kw)
    return issue_grant(OWNER, **args)  # type: ignore[arg-type]


def check(chain: list[Envelope], *, who: Identity = ALICE, action: str = "stats", **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "owner": OWNER.did,
        "dataset": DS,
        "requester": who.did,
        "action": action,
        "algorithm": "mean",
        "revocations": fresh(),
        "now": NOW,
    }
    args.update(kw)
    return verify_chain(chain, **args)  # type: ignore[arg-type]


def test_root_grant_verifies() -> None:
    g = root()
    v = check([g])
    assert v.leaf.aud == ALICE.did
    assert v.digests == (grant_digest(g),)


def test_delegation_narrows_and_verifies() -> None:
    g = root()
    d = delegate(g, ALICE, audience=BOB.did, actions=["stats"], max_uses=3, eps_total=1.0)
    v = check([g, d], who=BOB)
    assert v.leaf.max_uses == 3
    assert v.leaf.prf == grant_digest(g)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("actions", ["infer", "stats"]),
        ("expires", NOW + 2000),
        ("not_before", NOW - 200),
        ("max_uses", 11),
        ("max_uses", None),
        ("eps_per_use", 2.0),
        ("eps_per_use", None),
        ("eps_total", 6.0),
        ("eps_total", None),
        ("min_group", 4),
    ],
)
def test_every_widening_is_refused(field: str, value: object) -> None:
    g = root(algorithms=["mean"])
    with pytest.raises(GrantError):
        delegate(g, ALICE, audience=BOB.did, **{field: value})  # type: ignore[arg-type]
    with pytest.raises(GrantError):
        delegate(g, ALICE, audience=BOB.did, algorithms=["mean", "sum"])
    with pytest.raises(GrantError):
        delegate(g, ALICE, audience=BOB.did, algorithms=None)


def test_forged_widening_is_refused_by_the_verifier() -> None:
    # Alice signs a child that widens, bypassing delegate(): the verifier runs the same rule.
    from edgetrust.data.grant import _sign

    g = root()
    parent = read_grant(g)
    child = replace(parent, iss=ALICE.did, aud=BOB.did, max_uses=1000, prf=grant_digest(g))
    with pytest.raises(GrantError) as e:
        check([g, _sign(child, ALICE)], who=BOB)
    assert e.value.step == "3 narrowing"


def test_only_the_audience_delegates() -> None:
    with pytest.raises(GrantError):
        delegate(root(), BOB, audience=BOB.did)


@pytest.mark.parametrize(
    ("kw", "step"),
    [
        ({"who": BOB}, "4 use"),
        ({"now": NOW + 1000}, "4 use"),
        ({"now": NOW - 101}, "4 use"),
        ({"action": "infer"}, "4 use"),
        ({"dataset": OTHER_DS}, "2 chain"),
        ({"owner": BOB.did}, "2 chain"),
    ],
)
def test_refusals(kw: dict[str, object], step: str) -> None:
    with pytest.raises(GrantError) as e:
        check([root()], **kw)
    assert e.value.step == step


def test_algorithm_not_in_grant() -> None:
    with pytest.raises(GrantError):
        check([root(algorithms=["sum"])])


def test_tampered_grant_is_refused() -> None:
    env = json.loads(root().to_json())
    stmt = json.loads(base64.b64decode(env["payload"]))
    stmt["predicate"]["pol"]["maxUses"] = 10**6
    env["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    with pytest.raises(GrantError) as e:
        check([parse_envelope(json.dumps(env))])
    assert e.value.step == "1 signature"


def test_chain_out_of_order_or_unlinked() -> None:
    g = root()
    d = delegate(g, ALICE, audience=BOB.did)
    with pytest.raises(GrantError):
        check([d, g], who=BOB)
    other = root()  # same content, another nonce: d does not cite it
    with pytest.raises(GrantError):
        check([other, d], who=BOB)
    with pytest.raises(GrantError):
        check([], who=BOB)
    with pytest.raises(GrantError):
        check([g] * 9)


def test_revocation_by_issuer_or_ancestor_is_final_even_offline() -> None:
    g = root()
    d = delegate(g, ALICE, audience=BOB.did)
    for revoker, target in ((OWNER, g), (OWNER, d), (ALICE, d)):
        view = fresh()
        view.observe(0, [revoke(target, revoker, now=NOW).to_json()], size=1, at=NOW)
        with pytest.raises(GrantError) as e:
            check([g, d], who=BOB, revocations=view)
        assert e.value.step == "5 revocation"
        # offline, a day later: still refused for the revocation, not only for staleness
        with pytest.raises(GrantError, match="revoked"):
            check([g, d], who=BOB, revocations=view, now=NOW + 999)


def test_revocation_by_a_stranger_or_delegate_is_ignored() -> None:
    g = root()
    d = delegate(g, ALICE, audience=BOB.did)
    view = fresh()
    view.observe(
        0,
        [revoke(g, BOB).to_json(), revoke(g, ALICE).to_json(), b"not an envelope"],
        size=3,
        at=NOW,
    )
    check([g, d], who=BOB, revocations=view)


def test_stale_view_refuses() -> None:
    view = RevocationView(max_age=60)
    view.observe(0, [], size=0, at=NOW - 61)
    with pytest.raises(GrantError, match="freshness"):
        check([root()], revocations=view)
    with pytest.raises(InvalidInputError):
        view.observe(5, [], size=5)  # must read on from where it stopped


def test_malformed_grant_fields() -> None:
    good = read_grant(root()).to_predicate()
    bad = [
        {**good, "cmd": []},
        {**good, "cmd": ["delete"]},
        {**good, "cmd": ["train", "stats"]},
        {**good, "exp": good["nbf"]},
        {**good, "nbf": -1},
        {**good, "nbf": True},
        {**good, "sub": "sha256:zz"},
        {**good, "aud": "did:web:x"},
        {**good, "pol": {**good["pol"], "epsTotal": -1}},
        {**good, "pol": {**good["pol"], "epsTotal": "1"}},
        {**good, "pol": {**good["pol"], "minGroup": 0}},
        {**good, "pol": {**good["pol"], "algorithms": ["b", "a"]}},
        {**good, "pol": {**good["pol"], "extra": 1}},
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "prf"},
    ]
    for pred in bad:
        with pytest.raises(InvalidInputError):
            Grant.from_predicate(pred)


# -- property: no delegate can widen ---------------------------------------------------------

caps = st.one_of(st.none(), st.integers(0, 20))
eps = st.one_of(st.none(), st.floats(0, 10, allow_nan=False))
algos = st.one_of(
    st.none(), st.sets(st.sampled_from(["a", "b", "c", "d"])).map(lambda s: tuple(sorted(s)))
)
grants = st.builds(
    lambda cmd, nbf, span, uses, al, e1, e2, k: Grant(
        OWNER.did, ALICE.did, DS, tuple(sorted(cmd)), nbf, nbf + span, uses, al, e1, e2, k
    ),
    st.sets(st.sampled_from(ACTIONS), min_size=1),
    st.integers(0, 100),
    st.integers(1, 100),
    caps,
    algos,
    eps,
    eps,
    st.integers(1, 10),
)


def permits(g: Grant, action: str, algo: str, t: int, uses: int, e: float, k: int) -> bool:
    """An independent model of what a grant allows: one use by the letter of each field."""
    return (
        action in g.cmd
        and g.nbf <= t < g.exp
        and (g.max_uses is None or uses <= g.max_uses)
        and (g.algorithms is None or algo in g.algorithms)
        and (g.eps_per_use is None or e <= g.eps_per_use)
        and (g.eps_total is None or e * uses <= g.eps_total)
        and k >= g.min_group
    )


@settings(max_examples=300, deadline=None)
@given(
    grants,
    grants,
    st.sampled_from(ACTIONS),
    st.sampled_from(["a", "b", "c", "d"]),
    st.integers(0, 210),
    st.integers(1, 25),
    st.floats(0, 3, allow_nan=False),
    st.integers(1, 12),
)
def test_accepted_delegation_never_permits_more(
    parent: Grant, child_shape: Grant, action: str, algo: str, t: int, uses: int, e: float, k: int
) -> None:
    child = replace(child_shape, iss=parent.aud, aud=BOB.did)
    try:
        check_narrows(parent, child)
    except GrantError:
        return
    if permits(child, action, algo, t, uses, e, k):
        assert permits(parent, action, algo, t, uses, e, k)


@settings(max_examples=100, deadline=None)
@given(grants)
def test_narrowing_is_reflexive(g: Grant) -> None:
    check_narrows(g, replace(g, iss=g.aud))


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(0, 2000))
def test_any_flipped_byte_fails(noise: bytes, pos: int) -> None:
    env = root()
    payload = bytearray(env.payload)
    i = pos % len(payload)
    payload[i] ^= noise[0] or 1
    forged = Envelope(bytes(payload), env.payload_type, env.signatures)
    with pytest.raises((VerificationError, InvalidInputError)):
        check([forged])
