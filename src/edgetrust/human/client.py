"""A scripted reviewer: the node's ``/v1/human`` ceremonies driven from Python over HTTP.

`HumanClient` pairs a DID identity with a `SoftAuthenticator` and runs the same three-step
ceremonies a browser would (options, WebAuthn response, DSSE signed by the DID key). The CLI
(`edgetrust human ...`) and the demo use it; any ``httpx.Client`` works as transport, including
FastAPI's ``TestClient``. Every node refusal becomes a typed error with the node's one-line
message; an unreachable node is an `InvalidInputError`.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from edgetrust.dsse import sign_envelope
from edgetrust.errors import ConflictError, Error, InvalidInputError, NotFoundError
from edgetrust.human.authenticator import SoftAuthenticator
from edgetrust.human.reviewers import b64url_decode
from edgetrust.human.tasks import make_task, sign_task
from edgetrust.identity import Identity
from edgetrust.statement import IN_TOTO_PAYLOAD_TYPE

__all__ = ["HumanClient", "NodeError"]


class NodeError(InvalidInputError):
    """The node refused a request (its 4xx message)."""


_BY_STATUS: dict[int, type[Error]] = {404: NotFoundError, 409: ConflictError}


class HumanClient:
    """One reviewer (DID + authenticator) talking to one node."""

    def __init__(
        self,
        url: str,
        identity: Identity,
        authenticator: SoftAuthenticator | None = None,
        *,
        http: httpx.Client | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.identity = identity
        self.authenticator = authenticator
        self._http = http or httpx.Client(timeout=timeout)

    # -- transport ---------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        target = self.url + "/v1/human" + path
        try:
            resp = self._http.request(method, target, **kw)
        except httpx.HTTPError as exc:
            raise InvalidInputError(f"cannot reach the node at {self.url}: {exc}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code != 200:
            message = body.get("message") if isinstance(body, dict) else None
            text = message or resp.text[:200].replace("\n", " ") or resp.reason_phrase
            cls = _BY_STATUS.get(resp.status_code, NodeError)
            raise cls(f"the node answered {resp.status_code}: {text}")
        if not isinstance(body, dict):
            raise NodeError(
                f"the node at {self.url} did not answer JSON (is it an edgetrust node?)"
            )
        return body

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", path, json=body)

    def _get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return self._call("GET", path, params=params)

    def _sign(self, payload_b64: object) -> dict[str, Any]:
        if not isinstance(payload_b64, str):
            raise NodeError("the node sent no statement to sign")
        payload = base64.b64decode(payload_b64, validate=True)
        return sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, self.identity).to_dict()

    def _auth(self) -> SoftAuthenticator:
        if self.authenticator is None:
            raise InvalidInputError("no authenticator: run 'edgetrust human register' first")
        return self.authenticator

    @staticmethod
    def _challenge(options: dict[str, Any]) -> bytes:
        public = options.get("publicKey")
        if not isinstance(public, dict):
            raise NodeError("the node's options have no publicKey")
        return b64url_decode(public.get("challenge"), "challenge")

    @classmethod
    def _expect_challenge(cls, options: dict[str, Any], digest: bytes) -> None:
        if not hmac.compare_digest(cls._challenge(options), digest):
            raise NodeError(
                "the node asked the passkey to sign something other than this statement"
            )

    # -- ceremonies --------------------------------------------------------------------------

    def register(self) -> dict[str, Any]:
        """Bind a new soft passkey to this DID; the reviewer statement is logged."""
        if self.authenticator is None:
            self.authenticator = SoftAuthenticator()
        did = self.identity.did
        opts = self._post("/register/options", {"did": did})
        credential = self.authenticator.create(self._challenge(opts))
        got = self._post("/register/verify", {"did": did, "credential": credential})
        return self._post("/reviewers", self._sign(got.get("payload")))

    def login(self) -> dict[str, Any]:
        """Prove possession of the passkey (the node gives no session)."""
        did = self.identity.did
        opts = self._post("/login/options", {"did": did})
        credential = self._auth().get(self._challenge(opts))
        return self._post("/login/verify", {"did": did, "credential": credential})

    def add_task(
        self,
        subject: str,
        question: str,
        answers: Sequence[str],
        *,
        gold: str | None = None,
        keep: Callable[[str, dict[str, str]], None] | None = None,
    ) -> dict[str, Any]:
        """Sign and log a review task on `subject` (a sha256 hex digest).

        With `gold` (one of `answers`), only a salted commitment to it is logged; the answer
        comes back as ``goldSecret: {answer, salt}``, never sent: keep it for `reveal`.
        `keep(task_digest, secret)` is called before the task is sent, so a secret that
        cannot be stored never leaves a logged gold task that nobody can reveal.
        """
        from edgetrust.human.gold import gold_commitment, new_salt

        secret = None
        if gold is not None:
            if gold not in answers:
                raise InvalidInputError(f"gold answer {gold!r:.40} is not one of {list(answers)}")
            secret = {"answer": gold, "salt": new_salt()}
        commitment = gold_commitment(**secret) if secret else None
        task = make_task(subject.removeprefix("sha256:"), question, list(answers), gold=commitment)
        if secret and keep is not None:
            keep(task.digest, secret)
        answer = self._post("/tasks", sign_task(self.identity, task).to_dict())
        return {**answer, "goldSecret": secret} if secret else answer

    def reveal(self, task: str, answer: str, salt: str) -> dict[str, Any]:
        """Log the reveal of a gold task's answer (this DID must be the task's author)."""
        from edgetrust.human.gold import sign_reveal

        env = sign_reveal(self.identity, task.removeprefix("sha256:"), answer, salt)
        return self._post("/gold", env.to_dict())

    def review(self, task: str, answer: str, confidence: float = 1.0) -> dict[str, Any]:
        """Answer `task`: assertion over the statement digest, then the DID's signature."""
        if not 0.0 <= confidence <= 1.0:
            raise InvalidInputError("confidence must be between 0 and 1")
        task_hex = task.removeprefix("sha256:")
        req = {
            "task": task_hex,
            "answer": answer,
            "confidence": confidence,
            "reviewer": self.identity.did,
        }
        from edgetrust.human.tasks import Verdict, review_digest, sign_review

        opts = self._post("/review/options", req)
        # The passkey signs only the digest of what this reviewer means, computed here: a node
        # that sent another challenge would otherwise get an assertion over anything.
        digest = review_digest(task_hex, answer, confidence, self.identity.did)
        self._expect_challenge(opts, digest)
        assertion = self._auth().get(digest)
        verdict = Verdict(task_hex, answer, confidence, self.identity.did, assertion)
        return self._post("/verdicts", sign_review(self.identity, verdict).to_dict())

    def vouch(self, did: str) -> dict[str, Any]:
        """Co-sign `did` as a newcomer (this DID must be a registered reviewer).

        The passkey asserts over the vouch digest, then the DID signs the statement.
        """
        from edgetrust.human.vouch import sign_vouch

        if did == self.identity.did:
            raise InvalidInputError("a reviewer cannot vouch for themselves")
        from edgetrust.human.vouch import vouch_digest

        opts = self._post("/vouch/options", {"voucher": self.identity.did, "newcomer": did})
        digest = vouch_digest(self.identity.did, did)
        self._expect_challenge(opts, digest)
        assertion = self._auth().get(digest)
        return self._post("/vouches", sign_vouch(self.identity, did, assertion).to_dict())

    def publish_aggregate(self, task: str) -> dict[str, Any]:
        """Sign the node's aggregate statement for `task` and log it (the node re-runs it)."""
        st = self._post("/aggregates/statement", {"task": task})
        return self._post("/aggregates", self._sign(st.get("payload")))

    # -- reads -------------------------------------------------------------------------------

    def tasks(self, *, mine: bool = False) -> list[dict[str, Any]]:
        """Every logged task (with this reviewer's own answer as `mine` when asked)."""
        params = {"reviewer": self.identity.did} if mine else None
        return list(self._get("/tasks", params)["tasks"])

    def aggregate(self, task: str | None = None) -> list[dict[str, Any]]:
        """Dawid–Skene rows for one task or all."""
        if task is not None:
            return [self._get(f"/tasks/{task.removeprefix('sha256:')}/aggregate")]
        return list(self._get("/aggregate")["results"])

    def reputation(self, did: str | None = None) -> list[dict[str, Any]]:
        """Reviewer rows (reviews, agreement, reliability, vouchers) for one DID or all."""
        if did is not None:
            return [self._get(f"/reviewers/{did}")]
        return list(self._get("/reviewers")["reviewers"])

    def close(self) -> None:
        """Close the HTTP transport."""
        self._http.close()
