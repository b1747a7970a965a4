"""`HumanAttested`: a verification policy that a receipt was confirmed by enough reviewers.

The evidence is read from the log, never from a side table: `HumanRecord.from_entries` replays
reviewer, task, review, gold-reveal and vouch statements in log order, verifying each verdict's
passkey assertion (so counters are checked in the order everyone sees), keeps the first verdict
per reviewer and task, and aggregates each group of tasks with the same answers by Dawid–Skene,
with revealed gold tasks clamped to their answer (a commitment alone anchors nothing).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edgetrust.errors import Error, InvalidInputError, VerificationError
from edgetrust.human.aggregate import dawid_skene
from edgetrust.human.gold import (
    GOLD_PREDICATE_TYPE,
    GoldError,
    GoldReveal,
    check_reveal,
    reveal_from_statement,
)
from edgetrust.human.reviewers import (
    REVIEWER_PREDICATE_TYPE,
    ReviewerRegistry,
    passkey_from_statement,
)
from edgetrust.human.tasks import (
    REVIEW_PREDICATE_TYPE,
    TASK_PREDICATE_TYPE,
    Task,
    Verdict,
    task_from_statement,
    verify_verdict,
)
from edgetrust.human.vouch import VOUCH_PREDICATE_TYPE, verify_vouch
from edgetrust.log.service import Log
from edgetrust.receipts import Receipt
from edgetrust.statement import open_signed_statement

__all__ = [
    "AGGREGATE_PREDICATE_TYPE",
    "DEFAULT_ORIGIN",
    "DEFAULT_RP_ID",
    "HumanAttested",
    "HumanRecord",
    "ReviewerStats",
    "TaskResult",
    "human_policy_from_log",
    "parse_human_option",
]

AGGREGATE_PREDICATE_TYPE = "https://edgetrust.dev/human-aggregate/v1"
"""A published aggregate (built and checked in `human.published`; the record notes where)."""
DEFAULT_RP_ID = "edgetrust.local"
"""The RP ID the embedded node's review pages use unless configured otherwise."""
DEFAULT_ORIGIN = "https://edgetrust.local"

_STEP = "7 policy"


@dataclass(frozen=True)
class TaskResult:
    """The aggregate judgement on one task."""

    task: Task
    answer: str
    posterior: float
    """Dawid–Skene posterior of `answer` (a float)."""
    reviewers: tuple[str, ...]


@dataclass(frozen=True)
class ReviewerStats:
    """A reviewer's record, derived from the log."""

    did: str
    reviews: int
    agreement: float
    """Share of their verdicts that match the aggregate answer."""
    reliability: float
    """Dawid–Skene estimate of P(correct) (a float), anchored by revealed gold tasks."""
    gold_reviews: int = 0
    """Verdicts on gold tasks whose answer has been revealed."""
    gold_accuracy: float | None = None
    """Share of those that match the revealed answer (None without any)."""


@dataclass
class HumanRecord:
    """Tasks and verified verdicts replayed from log entries."""

    registry: ReviewerRegistry
    tasks: dict[str, Task] = field(default_factory=dict)
    verdicts: dict[str, dict[str, Verdict]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    """One line per review entry that did not verify (kept out of the aggregate)."""
    vouches: dict[str, set[str]] = field(default_factory=dict)
    """Newcomer DID -> the distinct registered reviewers who vouched for them."""
    indices: dict[str, dict[str, int]] = field(default_factory=dict)
    """Task digest -> reviewer -> log index of the counted verdict (when replayed with indices)."""
    authors: dict[str, str] = field(default_factory=dict)
    """Task digest -> the DID that signed the (first) task statement."""
    gold: dict[str, str] = field(default_factory=dict)
    """Gold task digest -> its answer, once a reveal matching the commitment is logged."""
    published: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Task digest -> (log index, logSize) of its latest published aggregate (not re-checked)."""
    reveals: dict[str, int] = field(default_factory=dict)
    """Gold task digest -> log index of its accepted reveal (when replayed with indices)."""

    @classmethod
    def from_entries(
        cls, entries: Iterable[bytes], *, rp_id: str, origin: str, start: int = 0
    ) -> HumanRecord:
        """Replay log entries (the first at log index `start`); other types are skipped."""
        rec = cls(ReviewerRegistry(rp_id=rp_id, origin=origin))
        for i, entry in enumerate(entries, start):
            rec.apply(entry, i)
        return rec

    def vouched(self, did: str, k: int) -> bool:
        """Whether at least `k` distinct registered reviewers vouched for `did`."""
        return len(self.vouches.get(did, ())) >= k

    def apply(self, entry: bytes, index: int | None = None) -> str | None:
        """Replay one log entry; its predicate type if it was a human one, else None.

        A review or vouch that does not verify is kept out and named in `refused` (never
        raised). `index` is the entry's log index, kept for counted verdicts.
        """
        try:
            signed = open_signed_statement(entry)
        except Error:
            return None
        ptype = signed.statement.predicate_type
        try:
            if ptype == REVIEWER_PREDICATE_TYPE:
                self.registry.add(passkey_from_statement(signed.statement))
            elif ptype == TASK_PREDICATE_TYPE:
                self.add_task(task_from_statement(signed.statement), signed.signer)
            elif ptype == REVIEW_PREDICATE_TYPE:
                digest = signed.statement.subjects[0].sha256
                if digest not in self.tasks:
                    raise VerificationError("review of a task not in the log")
                if digest in self.gold:
                    raise GoldError(
                        f"verdict on gold task {digest[:12]} logged after its answer was "
                        "revealed; not counted"
                    )
                v = verify_verdict(signed, self.tasks[digest], self.registry)
                if self.add_verdict(v) and index is not None:
                    self.indices.setdefault(v.task, {})[v.reviewer] = index
            elif ptype == GOLD_PREDICATE_TYPE:
                reveal = reveal_from_statement(signed.statement)
                if self.reveal(reveal, signed.signer) and index is not None:
                    self.reveals[reveal.task] = index
            elif ptype == VOUCH_PREDICATE_TYPE:
                vouch = verify_vouch(signed, self.registry)
                self.vouches.setdefault(vouch.newcomer, set()).add(vouch.voucher)
            elif ptype == AGGREGATE_PREDICATE_TYPE:
                size = signed.statement.predicate.get("logSize")
                if index is not None and isinstance(size, int):
                    self.published[signed.statement.subjects[0].sha256] = (index, size)
            else:
                return None
        except Error as exc:
            self.refused.append(exc.diagnostics())
        return ptype

    def add_task(self, task: Task, author: str) -> bool:
        """Know `task` (signed by `author`); False if it was already known."""
        if task.digest in self.tasks:
            return False
        self.tasks[task.digest] = task
        self.authors[task.digest] = author
        return True

    def reveal(self, reveal: GoldReveal, signer: str) -> bool:
        """Accept a gold reveal that opens its task's commitment; False if already revealed.

        Raises:
            VerificationError: the task is not in the log.
            GoldError: the reveal does not open the commitment (see `gold.check_reveal`).
        """
        task = self.tasks.get(reveal.task)
        if task is None:
            raise VerificationError(f"gold reveal of task {reveal.task[:12]} not in the log")
        check_reveal(
            reveal,
            signer,
            commitment=task.commitment,
            author=self.authors[reveal.task],
            answers=task.answers,
        )
        if reveal.task in self.gold:
            return False
        self.gold[reveal.task] = reveal.answer
        return True

    def _gold(
        self,
        answers: tuple[str, ...],
        digests: list[str],
        trusted: frozenset[str] | None = None,
    ) -> dict[int, int]:
        """Row index -> class index of the revealed gold tasks among `digests`.

        With `trusted`, only gold tasks authored by one of those DIDs anchor anything: a gold
        answer is its author's word, and anyone may author tasks.
        """
        return {
            i: answers.index(self.gold[d])
            for i, d in enumerate(digests)
            if d in self.gold and (trusted is None or self.authors.get(d) in trusted)
        }

    def add_verdict(self, verdict: Verdict) -> bool:
        """Count `verdict` unless its reviewer already judged the task (the first one counts)."""
        group = self.verdicts.setdefault(verdict.task, {})
        if verdict.reviewer in group:
            return False
        group[verdict.reviewer] = verdict
        return True

    def _groups(
        self, only: Callable[[str], bool] | None = None
    ) -> dict[tuple[str, ...], list[str]]:
        groups: dict[tuple[str, ...], list[str]] = {}
        for digest, task in self.tasks.items():
            if any(only is None or only(r) for r in self.verdicts.get(digest, {})):
                groups.setdefault(task.answers, []).append(digest)
        return groups

    def reputation(self) -> dict[str, ReviewerStats]:
        """Per reviewer, derived from the replayed log: reviews, agreement, DS reliability.

        Reliability is Dawid–Skene's estimated probability of a correct answer, averaged over
        the answer-set groups the reviewer worked in, weighted by their reviews in each.
        """
        acc: dict[str, list[float]] = {}
        results = self.results()
        for answers, digests in self._groups().items():
            labels, reviewers = self._matrix(answers, digests)
            rel = dawid_skene(labels, len(answers), gold=self._gold(answers, digests)).reliability
            for j, r in enumerate(reviewers):
                n = int((labels[:, j] >= 0).sum())
                mine = [self.verdicts[d][r] for d in digests if r in self.verdicts[d]]
                agree = sum(1 for v in mine if v.answer == results[v.task].answer)
                on_gold = [v.answer == self.gold[v.task] for v in mine if v.task in self.gold]
                a = acc.setdefault(r, [0.0, 0.0, 0.0, 0.0, 0.0])
                a[0] += n
                a[1] += agree
                a[2] += float(rel[j]) * n
                a[3] += len(on_gold)
                a[4] += sum(on_gold)
        return {
            r: ReviewerStats(
                r, int(n), agree / max(n, 1), rel / max(n, 1), int(ng), hit / ng if ng else None
            )
            for r, (n, agree, rel, ng, hit) in sorted(acc.items())
        }

    def _matrix(
        self,
        answers: tuple[str, ...],
        digests: list[str],
        only: Callable[[str], bool] | None = None,
    ) -> tuple[npt.NDArray[np.int64], list[str]]:
        reviewers = sorted(
            {r for d in digests for r in self.verdicts[d] if only is None or only(r)}
        )
        col = {r: i for i, r in enumerate(reviewers)}
        labels = np.full((len(digests), len(reviewers)), -1, dtype=np.int64)
        for i, d in enumerate(digests):
            for r, v in self.verdicts[d].items():
                if r in col:
                    labels[i, col[r]] = answers.index(v.answer)
        return labels, reviewers

    def results(
        self,
        *,
        gold_authors: frozenset[str] | None = None,
        only: Callable[[str], bool] | None = None,
    ) -> dict[str, TaskResult]:
        """Dawid–Skene per group of tasks sharing one answer set; keyed by task digest.

        `gold_authors`: only revealed gold tasks by these DIDs anchor the EM (None: every
        author's). `only`: count only the verdicts of reviewers it accepts (e.g. vouched ones).
        """
        out: dict[str, TaskResult] = {}
        for answers, digests in self._groups(only).items():
            labels, reviewers = self._matrix(answers, digests, only)
            agg = dawid_skene(labels, len(answers), gold=self._gold(answers, digests, gold_authors))
            for i, d in enumerate(digests):
                k = int(agg.answers[i])
                out[d] = TaskResult(
                    self.tasks[d],
                    answers[k],
                    float(agg.posterior[i, k]),
                    tuple(r for j, r in enumerate(reviewers) if labels[i, j] >= 0),
                )
        return out


class HumanAttested:
    """Accept a receipt that `min_reviewers` reviewers judged `answer` with posterior ≥ p.

    `answer` defaults to each task's first allowed answer (by convention the affirmative one,
    e.g. ``"correct"``). The task's subject must be the receipt's output digest, and it must
    not be a gold task (a gold answer is its author's word, not a review).

    With `min_vouches` = v > 0, only the verdicts of reviewers whom at least v distinct
    registered reviewers vouched for are aggregated and counted: unvouched accounts neither
    count towards `min_reviewers` nor move the answer or posterior.

    Gold tasks anchor the aggregation only when their author is in `gold_authors` (default:
    nobody), because anyone can author a gold task and reveal a wrong answer to make honest
    reviewers look inverted.
    """

    def __init__(
        self,
        record: HumanRecord,
        *,
        min_reviewers: int,
        min_posterior: float,
        answer: str | None = None,
        min_vouches: int = 0,
        gold_authors: Iterable[str] = (),
    ) -> None:
        if min_vouches < 0:
            raise ValueError("`min_vouches` must be at least 0")
        self.min_vouches = min_vouches
        if min_reviewers < 1:
            raise ValueError("`min_reviewers` must be at least 1")
        if not 0.0 < min_posterior <= 1.0:
            raise ValueError("`min_posterior` must be in (0, 1]")
        self.record, self.k, self.p, self.answer = record, min_reviewers, min_posterior, answer
        only = (lambda d: record.vouched(d, min_vouches)) if min_vouches else None
        self._results = record.results(gold_authors=frozenset(gold_authors), only=only)

    def verify(self, receipt: Receipt) -> None:
        """Accept when one task on this receipt's output meets the bar."""
        subject = receipt.output_digest.removeprefix("sha256:")
        # a revealed gold task's result is its author's answer, not the reviewers' judgement
        gold = self.record.gold
        mine = [r for d, r in self._results.items() if r.task.subject == subject and d not in gold]
        vouched = f" vouched by {self.min_vouches}+" if self.min_vouches else ""
        if not mine:
            reviewed = any(
                t.subject == subject and d not in gold and self.record.verdicts.get(d)
                for d, t in self.record.tasks.items()
            )
            if reviewed and self.min_vouches:  # only unvouched reviewers answered
                raise VerificationError(
                    f"human review insufficient: 0 reviewers{vouched} < {self.k}", step=_STEP
                )
            raise VerificationError("no human review of this receipt in the log", step=_STEP)
        reasons = []
        for r in mine:
            want = self.answer or r.task.answers[0]
            counted = r.reviewers  # with min_vouches, only vouched reviewers were aggregated
            if len(counted) < self.k:
                reasons.append(f"{len(counted)} reviewers{vouched} < {self.k}")
            elif r.answer != want:
                reasons.append(f"reviewers judged {r.answer!r}, not {want!r}")
            elif r.posterior < self.p:
                reasons.append(f"posterior {r.posterior:.3f} < {self.p}")
            else:
                return
        raise VerificationError("human review insufficient: " + "; ".join(reasons), step=_STEP)


def parse_human_option(text: str) -> tuple[int, float, int]:
    """Parse ``K,P`` or ``K,P,V`` (``3,0.9,2``) into (min_reviewers, min_posterior, min_vouches).

    V (default 0): only reviewers vouched for by at least V distinct registered reviewers count
    towards K, as `HumanAttested(min_vouches=V)`.
    """
    usage = "--human must be K,P or K,P,V (e.g. 3,0.9 or 3,0.9,2)"
    if len(text) > 40:
        raise InvalidInputError(f"{usage}; this one is too long")
    parts = text.split(",")
    try:
        k, p = int(parts[0]), float(parts[1])
        v = int(parts[2]) if len(parts) > 2 else 0
    except (ValueError, IndexError) as exc:
        raise InvalidInputError(f"{usage}, got {text!r:.40}") from exc
    if len(parts) > 3 or k < 1 or not 0.0 < p <= 1.0 or v < 0:
        raise InvalidInputError("--human K,P[,V] needs K >= 1, 0 < P <= 1 and V >= 0")
    return k, p, v


def human_policy_from_log(
    text: str,
    home: str | os.PathLike[str] | None = None,
    *,
    rp_id: str = DEFAULT_RP_ID,
    origin: str = DEFAULT_ORIGIN,
) -> HumanAttested:
    """`HumanAttested` from a ``K,P[,V]`` option, with evidence replayed from the local log."""
    k, p, v = parse_human_option(text)
    with Log.open(home) as log:
        entries = log.entries(0, log.size()) if log.size() else []
    return HumanAttested(
        HumanRecord.from_entries(entries, rp_id=rp_id, origin=origin),
        min_reviewers=k,
        min_posterior=p,
        min_vouches=v,
    )
