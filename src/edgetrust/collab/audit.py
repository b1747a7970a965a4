"""The audit of federated rounds: replay the log and check the chain of records.

`audit_log` replays the `fl-round-config/v1` and `fl-round/v1` statements (see `rounds`) and
checks that each round starts from the previous round's output model and config, the
commitments are signed by the survivors, the privacy budget adds up (recomputed with
dp-accounting) and stays under `epsilon_max`, and, when the artifacts are at hand, that the
published model is exactly the input model plus the aggregate.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Any

from edgetrust.collab.dp import epsilon_after
from edgetrust.collab.rounds import (
    ROUND_CONFIG_PREDICATE_TYPE,
    ROUND_PREDICATE_TYPE,
    ArtifactStore,
    RoundConfig,
    RoundRecord,
    apply_update,
    mean_update,
)
from edgetrust.dsse import Envelope, parse_envelope
from edgetrust.encoding import canonical_tensor_bytes, digest_bytes
from edgetrust.errors import Error, NotFoundError, VerificationError
from edgetrust.statement import Statement, open_signed_statement, parse_statement

__all__ = ["AuditReport", "RoundAudit", "audit_log"]


@dataclass(frozen=True)
class RoundAudit:
    """What the audit established for one round."""

    session: str
    round: int
    input_model: str
    output_model: str
    survivors: int
    dropped: int
    epsilon: float | None
    model_recomputed: bool
    """The new model was recomputed from the input model and the aggregate, bit for bit."""
    accuracy: float | None = None
    guarantee: str | None = None
    """The DP guarantee the round gave ("user-level" or "sample-level"), None without DP."""


@dataclass(frozen=True)
class AuditReport:
    """The rounds that passed the audit, in log order, and the log size audited."""

    log_size: int
    rounds: tuple[RoundAudit, ...] = field(default_factory=tuple)

    @property
    def sessions(self) -> tuple[str, ...]:
        """Sessions seen, in order of first appearance."""
        return tuple(dict.fromkeys(r.session for r in self.rounds))


def _open(entry: bytes) -> tuple[Envelope, Statement, str] | None:
    """Open an entry if it is one of ours (or a model card); None for other entries."""
    try:
        envelope = parse_envelope(entry)
        statement = parse_statement(envelope.payload)
    except Error:
        return None
    if statement.predicate_type not in (
        ROUND_CONFIG_PREDICATE_TYPE,
        ROUND_PREDICATE_TYPE,
        "https://edgetrust.dev/model/v1",
    ):
        return None
    signed = open_signed_statement(envelope)
    return envelope, signed.statement, signed.signer


def audit_log(
    log: Any,
    *,
    home: str | os.PathLike[str] | None = None,
    session: str | None = None,
    require_artifacts: bool = False,
) -> AuditReport:
    """Replay every federated round in `log` and check the chain of records.

    Steps, per round (a failure raises `VerificationError` whose step names the round):
      1. the config and the record verify (signature, predicate) and share one coordinator;
      2. the record points at its config (digest and index) and the session's previous record;
      3. the input model is the previous round's output model;
      4. survivors are participants, dropouts the rest; each survivor's commitment is signed;
      5. the record states the config's guarantee (user- or sample-level), the noise clients
         were told to add is what the accountant assumes, the DP parameters did not change
         mid-session, and ε recomputed with dp-accounting for this many rounds (times the
         local DP-SGD steps, sample-level) matches the record and stays within `epsilon_max`;
      6. the new model card was logged and names the output model;
      7. with the artifacts (the input model and the aggregate, in `home`): the output model
         is exactly the input model plus the aggregate update (skipped when missing, unless
         `require_artifacts`).

    `log` is anything with ``size()`` and ``entry(i)``, e.g. `edgetrust.log.Log`.
    """
    from edgetrust.models import ModelRegistry, read_model_card

    registry = ModelRegistry(home)
    artifacts = ArtifactStore(home)
    size = int(log.size())
    configs: dict[str, tuple[int, RoundConfig, str]] = {}
    cards: dict[str, tuple[int, str]] = {}
    last: dict[str, tuple[RoundRecord, str, str]] = {}  # session -> (record, sha, signer)
    audits: list[RoundAudit] = []
    for index in range(size):
        raw = log.entry(index)
        try:
            opened = _open(raw)
        except Error as exc:
            raise VerificationError(
                f"log entry {index} does not verify: {exc}", step="1 signature"
            ) from exc
        if opened is None:
            continue
        envelope, statement, signer = opened
        sha = hashlib.sha256(raw).hexdigest()
        if statement.predicate_type == "https://edgetrust.dev/model/v1":
            model_card, _ = read_model_card(envelope)
            cards[sha] = (index, model_card.digest)
            continue
        if statement.predicate_type == ROUND_CONFIG_PREDICATE_TYPE:
            cfg = RoundConfig.from_predicate(statement.predicate)
            if session is None or cfg.session == session:
                configs[sha] = (index, cfg, signer)
            continue
        rec = RoundRecord.from_predicate(statement.predicate)
        if session is not None and rec.session != session:
            continue
        step = f"round {rec.round} of session {rec.session[:8]}"
        # 1-2 config and chain
        if rec.config not in configs or configs[rec.config][0] != rec.config_index:
            raise VerificationError(
                f"{step}: its config is not in the log where it says", step="2 chain"
            )
        _, cfg, cfg_signer = configs[rec.config]
        if cfg_signer != signer:
            raise VerificationError(
                f"{step}: config and record have different signers", step="1 signature"
            )
        if cfg.session != rec.session or cfg.round != rec.round:
            raise VerificationError(f"{step}: config is for another round", step="2 chain")
        previous = last.get(rec.session)
        if previous is None:
            if rec.round != 1 or cfg.previous_record is not None:
                raise VerificationError(
                    f"{step}: session does not start at round 1", step="2 chain"
                )
        else:
            prev_rec, prev_sha, prev_signer = previous
            if rec.round != prev_rec.round + 1 or cfg.previous_record != prev_sha:
                raise VerificationError(
                    f"{step}: does not follow round {prev_rec.round}", step="2 chain"
                )
            if prev_signer != signer:
                raise VerificationError(
                    f"{step}: coordinator changed mid-session", step="1 signature"
                )
            # 3 model lineage
            if cfg.input_model != prev_rec.output_model:
                raise VerificationError(
                    f"{step}: starts from {cfg.input_model[:19]}…, not the previous output model",
                    step="3 lineage",
                )
        if rec.input_model != cfg.input_model:
            raise VerificationError(
                f"{step}: record and config disagree on the input model", step="3 lineage"
            )
        # 4 participants and commitments
        participants = set(cfg.participants)
        if not set(rec.survivors) <= participants or set(rec.dropped) != participants - set(
            rec.survivors
        ):
            raise VerificationError(
                f"{step}: survivors and dropouts do not partition the participants",
                step="4 commitments",
            )
        if len(rec.survivors) < cfg.min_survivors:
            raise VerificationError(
                f"{step}: fewer survivors than min_survivors", step="4 commitments"
            )
        if tuple(c.client for c in rec.commitments) != rec.survivors:
            raise VerificationError(
                f"{step}: commitments do not match the survivors", step="4 commitments"
            )
        round_id = bytes.fromhex(rec.config)
        for c in rec.commitments:
            try:
                c.verify(round_id)
            except VerificationError as exc:
                raise VerificationError(
                    f"{step}: commitment of {c.client} is not signed", step="4 commitments"
                ) from exc
        # 5 privacy budget
        if cfg.noise_multiplier > 0:
            prev_cfg = None if previous is None else configs[previous[0].config][1]
            _check_privacy_terms(rec, cfg, prev_cfg, step)
            want = epsilon_after(
                rec.round,
                noise_multiplier=cfg.noise_multiplier,
                sampling_rate=cfg.accounting_rate,
                delta=cfg.delta,
                steps_per_round=cfg.steps_per_round,
            )
            if rec.epsilon is None or not math.isclose(rec.epsilon, want, rel_tol=1e-6):
                raise VerificationError(
                    f"{step}: recorded ε {rec.epsilon} is not the accountant's {want:.6f}",
                    step="5 privacy",
                )
            if rec.delta != cfg.delta:
                raise VerificationError(f"{step}: recorded δ is not the config's", step="5 privacy")
            if cfg.epsilon_max is not None and want > cfg.epsilon_max:
                raise VerificationError(
                    f"{step}: ε {want:.3f} exceeds epsilon_max {cfg.epsilon_max}", step="5 privacy"
                )
        elif rec.epsilon is not None:
            raise VerificationError(
                f"{step}: ε recorded for a round without noise", step="5 privacy"
            )
        # 6 model card
        card = cards.get(rec.model_card)
        if card is None or card != (rec.model_card_index, rec.output_model):
            raise VerificationError(
                f"{step}: the new model's card is not logged as recorded", step="6 model card"
            )
        # 7 recompute (the server optimizer's state chains from the previous round's)
        prev_state = None
        if previous is not None:
            prev_state = previous[0].optimizer_state
            if configs[previous[0].config][1].server_optimizer != cfg.server_optimizer:
                raise VerificationError(
                    f"{step}: server optimizer changed mid-session", step="7 model"
                )
        if cfg.server_optimizer.stateful != (rec.optimizer_state is not None):
            raise VerificationError(
                f"{step}: optimizer state recorded does not match the optimizer", step="7 model"
            )
        recomputed = _recompute(rec, cfg, registry, artifacts, require_artifacts, step, prev_state)
        audits.append(
            RoundAudit(
                rec.session,
                rec.round,
                rec.input_model,
                rec.output_model,
                len(rec.survivors),
                len(rec.dropped),
                rec.epsilon,
                recomputed,
                rec.accuracy,
                cfg.guarantee if cfg.noise_multiplier > 0 else None,
            )
        )
        last[rec.session] = (rec, sha, signer)
    return AuditReport(size, tuple(audits))


def _dp_terms(cfg: RoundConfig) -> tuple[Any, ...]:
    return (
        cfg.guarantee,
        cfg.noise_multiplier,
        cfg.clip,
        cfg.accounting_rate,
        cfg.steps_per_round,
        cfg.delta,
        cfg.distributed,
    )


def _check_privacy_terms(
    rec: RoundRecord, cfg: RoundConfig, prev_cfg: RoundConfig | None, step: str
) -> None:
    """Step 5's checks before ε: the guarantee stated, the noise ordered, no mid-session change."""
    if (rec.guarantee or "user-level") != cfg.guarantee:
        raise VerificationError(
            f"{step}: record states {rec.guarantee} DP, the config {cfg.guarantee}",
            step="5 privacy",
        )
    # The noise each client adds: z·C per local step (sample-level), or its share
    # z·C/√min_survivors of the noise on the sum (user-level).
    if cfg.guarantee == "sample-level" and not cfg.distributed:
        want_std = cfg.noise_multiplier * cfg.clip
    else:
        want_std = cfg.noise_multiplier * cfg.clip / math.sqrt(cfg.min_survivors)
    if not cfg.client_noise_std >= want_std * (1 - 1e-9):
        raise VerificationError(
            f"{step}: clients were told to add noise σ={cfg.client_noise_std}, below the "
            f"{want_std:.6g} the accountant assumes",
            step="5 privacy",
        )
    if prev_cfg is not None and _dp_terms(prev_cfg) != _dp_terms(cfg):
        raise VerificationError(
            f"{step}: DP parameters changed mid-session, so ε does not compose as recorded",
            step="5 privacy",
        )


def _recompute(
    rec: RoundRecord,
    cfg: RoundConfig,
    registry: Any,
    artifacts: ArtifactStore,
    require: bool,
    step: str,
    prev_state: str | None = None,
) -> bool:
    from edgetrust.collab.training import mlp_weights_from_onnx
    from edgetrust.zoo import mlp_to_onnx

    try:
        aggregate = artifacts.get(rec.aggregate)
        old = registry.model_bytes(rec.input_model)
        state = None if prev_state is None else artifacts.get(prev_state)
        if rec.optimizer_state is not None:
            artifacts.get(rec.optimizer_state)  # the stored state must match its digest too
    except NotFoundError as exc:
        if require:
            raise VerificationError(f"{step}: {exc}", step="7 model") from exc
        return False
    weights, biases = mlp_weights_from_onnx(old)
    update = mean_update(cfg, aggregate, rec.aggregate_encoding, len(rec.survivors))
    direction, new_state = cfg.server_optimizer.step(update, state)
    if new_state is not None and digest_bytes(canonical_tensor_bytes(new_state)) != (
        rec.optimizer_state
    ):
        raise VerificationError(
            f"{step}: replaying the server optimizer does not give the recorded state",
            step="7 model",
        )
    new_w, new_b = apply_update(weights, biases, direction, cfg.server_lr)
    data = mlp_to_onnx(new_w, new_b, name=cfg.model_name).SerializeToString()
    if digest_bytes(data) != rec.output_model:
        raise VerificationError(
            f"{step}: input model + aggregate gives {digest_bytes(data)[:19]}…, "
            f"not the published {rec.output_model[:19]}…",
            step="7 model",
        )
    return True
