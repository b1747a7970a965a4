"""Federated rounds in the transparency log: the configuration before, the record after, the audit.

Before a round starts the coordinator logs a signed `https://edgetrust.dev/fl-round-config/v1`
statement (subject: the input model) naming the participants, thresholds, clip, noise and the
privacy budget; the digest of that envelope is the secure aggregation round id, so every
protocol message is bound to the logged configuration. After the round it logs the new model's
card and a `https://edgetrust.dev/fl-round/v1` statement (subject: the new model) with the
survivors and dropouts, each survivor's signed commitment to its masked input, the aggregate's
digest and the privacy spent.

`audit_log` replays those records and checks the chain: each round starts from the previous
round's output model and config, the commitments are signed by the survivors, the privacy
budget adds up and the published model is the input model plus the aggregate; it lives in
`collab.audit`.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgetrust.collab.abort import check_neighbours
from edgetrust.collab.adaptive import AdaptiveClip
from edgetrust.collab.messages import MaskedInput, verify_commitment
from edgetrust.collab.optim import ServerOptimizer
from edgetrust.collab.quantize import Quantizer
from edgetrust.collab.update import ArtifactStore, apply_update, mean_update, round_update
from edgetrust.dsse import Envelope, sign_envelope
from edgetrust.encoding import (
    digest_hex,
    parse_digest,
)
from edgetrust.errors import InvalidInputError
from edgetrust.identity import Identity, public_bytes_from_did
from edgetrust.statement import (
    IN_TOTO_PAYLOAD_TYPE,
    Statement,
    Subject,
    encode_statement,
    register_predicate_type,
)

__all__ = [
    "ROUND_CONFIG_PREDICATE_TYPE",
    "ROUND_PREDICATE_TYPE",
    "ArtifactStore",
    "Commitment",
    "RoundConfig",
    "RoundRecord",
    "apply_update",
    "envelope_sha256",
    "mean_update",
    "round_update",
    "sign_round_config",
    "sign_round_record",
]

ROUND_CONFIG_PREDICATE_TYPE = "https://edgetrust.dev/fl-round-config/v1"
ROUND_PREDICATE_TYPE = "https://edgetrust.dev/fl-round/v1"

_SESSION_HEX = 32
_AGGREGATORS = ("secagg-sum", "mean", "median", "trimmed-mean", "krum")
GUARANTEES = ("user-level", "sample-level")


def _req(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidInputError(f"{what}: field {key!r} is missing or of the wrong type")
    return value


def _num(obj: Mapping[str, Any], key: str, what: str) -> float:
    value = _req(obj, key, (int, float), what)
    if not math.isfinite(value):
        raise InvalidInputError(f"{what}: field {key!r} must be finite")
    return float(value)


def _dids(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(d, str) for d in value):
        raise InvalidInputError(f"{what} must be a list of DIDs")
    for d in value:
        public_bytes_from_did(d)
    if value != sorted(set(value)):
        raise InvalidInputError(f"{what} must be sorted without duplicates")
    return tuple(value)


@dataclass(frozen=True, kw_only=True)
class RoundConfig:
    """The `fl-round-config/v1` predicate: everything fixed before a round starts."""

    session: str
    """32 hex characters naming the federated session."""
    round: int
    """1-based round number within the session."""
    model_name: str
    input_model: str
    """``sha256:<hex>`` of the ONNX model every client starts from."""
    previous_record: str | None
    """sha256 hex of the previous round's record envelope (None for round 1)."""
    participants: tuple[str, ...]
    secagg: bool
    threshold: int
    min_survivors: int
    modulus_bits: int
    neighbours: int | None
    quant_bound: float
    """Each coordinate is clipped to ±bound before quantization."""
    clip: float
    noise_multiplier: float
    client_noise_std: float
    delta: float
    epsilon_max: float | None
    sampling_rate: float
    aggregator: str
    server_lr: float
    guarantee: str = "user-level"
    """Which DP guarantee the noise gives: "user-level" (DP-FedAvg) or "sample-level"
    (DP-SGD on each device); absent in configs from before sample-level DP: user-level."""
    steps_per_round: int = 1
    """Subsampled Gaussian steps per round the accountant composes: 1 (user-level) or the
    local DP-SGD steps every client runs (sample-level)."""
    example_rate: float | None = None
    """Sample-level: the Poisson probability q that an example is in a local step's batch."""
    distributed: bool = False
    """Sample-level: clients add only their share of each step's noise (one step a round,
    secure aggregation required), as user-level DP always does."""
    server_optimizer: ServerOptimizer = field(default_factory=ServerOptimizer)
    """How the coordinator turns the mean update into the next model (see `collab.optim`)."""
    prox_mu: float = 0.0
    """FedProx μ of the clients' local objective (0: plain local SGD)."""
    lr_schedule: str = "constant"
    """Local learning-rate schedule over a round's steps: "constant" or "cosine"."""
    expected_dropout: float | None = None
    """The per-client dropout rate the secure aggregation graph was sized for (None: not
    stated, as in configs from before the abort bound was recorded)."""
    abort_bound: float | None = None
    """The union bound on this round's abort probability at `expected_dropout` (see
    `collab.abort`); a SecAgg+ neighbourhood must keep it within `ABORT_BOUND`."""
    adaptive: AdaptiveClip | None = None
    """Adaptive clipping (`collab.adaptive`): clients append their noisy clipped bit to the
    update, and `clip` is this round's, set from the previous round's count."""
    local_epochs: int
    lr: float
    batch_size: int

    def __post_init__(self) -> None:
        if len(self.session) != _SESSION_HEX or any(
            c not in "0123456789abcdef" for c in self.session
        ):
            raise InvalidInputError("round config: `session` must be 32 lower-case hex characters")
        if self.round < 1:
            raise InvalidInputError("round config: `round` must be at least 1")
        parse_digest(self.input_model)
        if self.aggregator not in _AGGREGATORS:
            raise InvalidInputError(f"round config: unknown aggregator {self.aggregator!r}")
        if self.secagg != (self.aggregator == "secagg-sum"):
            raise InvalidInputError("round config: secure aggregation goes with 'secagg-sum' only")
        if len(self.participants) < 2:
            raise InvalidInputError("round config: needs at least 2 participants")
        if self.lr_schedule not in ("constant", "cosine"):
            raise InvalidInputError(f"round config: unknown lrSchedule {self.lr_schedule!r}")
        if not self.prox_mu >= 0:
            raise InvalidInputError("round config: proxMu must be non-negative")
        if self.guarantee not in GUARANTEES:
            raise InvalidInputError(f"round config: unknown DP guarantee {self.guarantee!r}")
        if self.steps_per_round < 1:
            raise InvalidInputError("round config: stepsPerRound must be at least 1")
        sample = self.guarantee == "sample-level"
        if sample != (self.example_rate is not None):
            raise InvalidInputError("round config: exampleRate goes with sample-level DP only")
        if self.example_rate is not None and not 0 < self.example_rate <= 1:
            raise InvalidInputError("round config: exampleRate must be in (0, 1]")
        if not sample and self.steps_per_round != 1:
            raise InvalidInputError("round config: user-level DP has one step per round")
        if self.distributed and (not sample or not self.secagg or self.steps_per_round != 1):
            raise InvalidInputError(
                "round config: distributed DP-SGD is sample-level, one step, with secagg"
            )
        self._check_abort_bound()
        if self.adaptive is not None:
            if self.guarantee != "user-level":
                raise InvalidInputError("round config: adaptiveClip is for user-level DP only")
            self.adaptive.update_noise_multiplier(self.noise_multiplier)

    def _check_abort_bound(self) -> None:
        """The stated abort bound is the one its graph gives, and SecAgg+ keeps it ≤ 1e-6."""
        if (self.expected_dropout is None) != (self.abort_bound is None):
            raise InvalidInputError(
                "round config: expectedDropout and abortBound go together (both or neither)"
            )
        if self.expected_dropout is None or self.abort_bound is None:
            return
        if not self.secagg:
            raise InvalidInputError("round config: an abort bound needs secure aggregation")
        if not 0 <= self.expected_dropout < 1:
            raise InvalidInputError("round config: expectedDropout must be in [0, 1)")
        n = len(self.participants)
        bound = check_neighbours(n, self.neighbours, self.threshold, self.expected_dropout)
        if not math.isclose(bound, self.abort_bound, rel_tol=1e-9, abs_tol=1e-300):
            raise InvalidInputError(
                f"round config: abortBound {self.abort_bound:.3g} is not the bound its graph "
                f"gives ({bound:.3g} for {n} clients, neighbours {self.neighbours}, threshold "
                f"{self.threshold}, dropout {self.expected_dropout:g})"
            )

    @property
    def extra_coordinates(self) -> int:
        """Extra coordinates clients append to the model update (1 for adaptive clipping)."""
        return 0 if self.adaptive is None else 1

    @property
    def accounting_rate(self) -> float:
        """The sampling rate the accountant composes: clients (user) or examples (sample)."""
        return self.sampling_rate if self.example_rate is None else self.example_rate

    @property
    def quantizer(self) -> Quantizer:
        """The quantizer every client uses in this round."""
        return Quantizer(
            bound=self.quant_bound,
            modulus_bits=self.modulus_bits,
            max_summands=len(self.participants),
        )

    def to_predicate(self) -> dict[str, Any]:
        """JSON form of the predicate."""
        return {
            "session": self.session,
            "round": self.round,
            "model": {"name": self.model_name, "digest": self.input_model},
            "previousRecord": self.previous_record,
            "participants": list(self.participants),
            "secagg": {
                "enabled": self.secagg,
                "threshold": self.threshold,
                "minSurvivors": self.min_survivors,
                "modulusBits": self.modulus_bits,
                "neighbours": self.neighbours,
                "quantizationBound": self.quant_bound,
                **(
                    {}
                    if self.expected_dropout is None
                    else {"expectedDropout": self.expected_dropout, "abortBound": self.abort_bound}
                ),
            },
            "dp": {
                "clip": self.clip,
                "noiseMultiplier": self.noise_multiplier,
                "clientNoiseStd": self.client_noise_std,
                "delta": self.delta,
                "epsilonMax": self.epsilon_max,
                "samplingRate": self.sampling_rate,
                "guarantee": self.guarantee,
                "stepsPerRound": self.steps_per_round,
                "exampleRate": self.example_rate,
                "distributed": self.distributed,
                **({} if self.adaptive is None else {"adaptiveClip": self.adaptive.to_predicate()}),
            },
            "aggregator": self.aggregator,
            "training": {
                "serverLr": self.server_lr,
                "serverOptimizer": self.server_optimizer.to_predicate(),
                "proxMu": self.prox_mu,
                "lrSchedule": self.lr_schedule,
                "localEpochs": self.local_epochs,
                "lr": self.lr,
                "batchSize": self.batch_size,
            },
        }

    @classmethod
    def from_predicate(cls, p: Mapping[str, Any]) -> RoundConfig:
        """Parse and check a `fl-round-config/v1` predicate."""
        w = "round config"
        model = _req(p, "model", dict, w)
        sa = _req(p, "secagg", dict, w)
        dp = _req(p, "dp", dict, w)
        tr = _req(p, "training", dict, w)
        prev = p.get("previousRecord")
        if prev is not None and (not isinstance(prev, str) or len(prev) != 64):
            raise InvalidInputError(f"{w}: previousRecord must be 64 hex characters or null")
        neighbours = sa.get("neighbours")
        if neighbours is not None and (
            isinstance(neighbours, bool) or not isinstance(neighbours, int)
        ):
            raise InvalidInputError(f"{w}: neighbours must be an integer or null")
        eps_max = dp.get("epsilonMax")
        example_rate = dp.get("exampleRate")
        return cls(
            session=_req(p, "session", str, w),
            round=_req(p, "round", int, w),
            model_name=_req(model, "name", str, w),
            input_model=_req(model, "digest", str, w),
            previous_record=prev,
            participants=_dids(p.get("participants"), "participants"),
            secagg=_req(sa, "enabled", bool, w),
            threshold=_req(sa, "threshold", int, w),
            min_survivors=_req(sa, "minSurvivors", int, w),
            modulus_bits=_req(sa, "modulusBits", int, w),
            neighbours=neighbours,
            quant_bound=_num(sa, "quantizationBound", w),
            clip=_num(dp, "clip", w),
            noise_multiplier=_num(dp, "noiseMultiplier", w),
            client_noise_std=_num(dp, "clientNoiseStd", w),
            delta=_num(dp, "delta", w),
            epsilon_max=None if eps_max is None else _num(dp, "epsilonMax", w),
            sampling_rate=_num(dp, "samplingRate", w),
            guarantee=_req(dp, "guarantee", str, w) if "guarantee" in dp else "user-level",
            steps_per_round=_req(dp, "stepsPerRound", int, w) if "stepsPerRound" in dp else 1,
            example_rate=None if example_rate is None else _num(dp, "exampleRate", w),
            distributed=_req(dp, "distributed", bool, w) if "distributed" in dp else False,
            aggregator=_req(p, "aggregator", str, w),
            server_lr=_num(tr, "serverLr", w),
            server_optimizer=ServerOptimizer.from_predicate(tr.get("serverOptimizer")),
            prox_mu=_num(tr, "proxMu", w) if "proxMu" in tr else 0.0,
            lr_schedule=_req(tr, "lrSchedule", str, w) if "lrSchedule" in tr else "constant",
            expected_dropout=_num(sa, "expectedDropout", w) if "expectedDropout" in sa else None,
            abort_bound=_num(sa, "abortBound", w) if "abortBound" in sa else None,
            adaptive=AdaptiveClip.from_predicate(dp["adaptiveClip"])
            if "adaptiveClip" in dp
            else None,
            local_epochs=_req(tr, "localEpochs", int, w),
            lr=_num(tr, "lr", w),
            batch_size=_req(tr, "batchSize", int, w),
        )


@dataclass(frozen=True)
class Commitment:
    """A survivor's signature on the digest of the (masked) vector it sent."""

    client: str
    digest: str
    """sha256 hex of the vector's little-endian uint32 bytes."""
    length: int
    signature: bytes

    @classmethod
    def from_message(cls, msg: MaskedInput) -> Commitment:
        """The commitment carried by a signed masked-input message."""
        return cls(msg.sender, msg.digest, int(msg.vector.size), msg.signature)

    def verify(self, round_id: bytes) -> None:
        """Check the signature as the masked-input message it was made for."""
        verify_commitment(
            round_id=round_id,
            sender=self.client,
            length=self.length,
            digest=self.digest,
            signature=self.signature,
        )


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    """The `fl-round/v1` predicate: what happened in a round."""

    session: str
    round: int
    config: str
    """sha256 hex of the round's config envelope (also the secure aggregation round id)."""
    config_index: int
    """Where the config was logged."""
    input_model: str
    output_model: str
    """``sha256:<hex>`` of the new ONNX model (the statement's subject)."""
    model_card: str
    """sha256 hex of the new model's signed card envelope, logged just before this record."""
    model_card_index: int
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    commitments: tuple[Commitment, ...]
    aggregate: str
    """``sha256:<hex>`` of the canonical tensor bytes of the aggregate (see `encoding`)."""
    aggregate_encoding: str
    """"uint32-sum" (secure aggregation) or "float64-update" (plain, robust aggregators)."""
    optimizer_state: str | None = None
    """``sha256:<hex>`` of the server optimizer's state after this round (None: stateless)."""
    round_epsilon: float | None
    epsilon: float | None
    """Cumulative ε after this round (None: no DP)."""
    epsilon_rdp: float | None
    delta: float | None = None
    """δ of the (ε, δ) pair (None: no DP)."""
    guarantee: str | None = None
    """"user-level" or "sample-level": whose data ε protects (None: no DP)."""
    accuracy: float | None = None
    consent: Mapping[str, Any] | None = None
    """The participants' data grants (`edgetrust.data.consent`), None for a round without."""
    clipped_fraction: float | None = None
    """Adaptive clipping: the noisy fraction of updates within the clip, read from the
    aggregate, from which the next round's clip follows (None: fixed clip)."""

    def to_predicate(self) -> dict[str, Any]:
        """JSON form of the predicate."""
        extra = {} if self.consent is None else {"consent": dict(self.consent)}
        return {
            **extra,
            "session": self.session,
            "round": self.round,
            "config": {"sha256": self.config, "index": self.config_index},
            "inputModel": self.input_model,
            "model": {
                "digest": self.output_model,
                "card": self.model_card,
                "cardIndex": self.model_card_index,
            },
            "survivors": list(self.survivors),
            "dropped": list(self.dropped),
            "commitments": [
                {
                    "client": c.client,
                    "digest": c.digest,
                    "length": c.length,
                    "sig": base64.b64encode(c.signature).decode(),
                }
                for c in self.commitments
            ],
            "aggregate": {"digest": self.aggregate, "encoding": self.aggregate_encoding},
            "optimizerState": self.optimizer_state,
            "privacy": {
                "accountant": "dp-accounting PLD",
                "guarantee": self.guarantee,
                "roundEpsilon": self.round_epsilon,
                "epsilon": self.epsilon,
                "epsilonRdp": self.epsilon_rdp,
                "delta": self.delta,
                **(
                    {}
                    if self.clipped_fraction is None
                    else {"clippedFraction": self.clipped_fraction}
                ),
            },
            "metrics": {"accuracy": self.accuracy},
        }

    @classmethod
    def from_predicate(cls, p: Mapping[str, Any]) -> RoundRecord:
        """Parse and check a `fl-round/v1` predicate."""
        w = "round record"
        cfg = _req(p, "config", dict, w)
        model = _req(p, "model", dict, w)
        agg = _req(p, "aggregate", dict, w)
        priv = _req(p, "privacy", dict, w)
        metrics = _req(p, "metrics", dict, w)
        commitments = []
        for c in _req(p, "commitments", list, w):
            if not isinstance(c, dict) or set(c) != {"client", "digest", "length", "sig"}:
                raise InvalidInputError(f"{w}: malformed commitment")
            try:
                sig = base64.b64decode(_req(c, "sig", str, w), validate=True)
            except ValueError as exc:
                raise InvalidInputError(f"{w}: commitment signature is not base64") from exc
            commitments.append(
                Commitment(
                    _dids([c["client"]], "commitment client")[0],
                    _req(c, "digest", str, w),
                    _req(c, "length", int, w),
                    sig,
                )
            )

        def opt(obj: Mapping[str, Any], key: str) -> float | None:
            return None if obj.get(key) is None else _num(obj, key, w)

        record = cls(
            session=_req(p, "session", str, w),
            round=_req(p, "round", int, w),
            config=_req(cfg, "sha256", str, w),
            config_index=_req(cfg, "index", int, w),
            input_model=_req(p, "inputModel", str, w),
            output_model=_req(model, "digest", str, w),
            model_card=_req(model, "card", str, w),
            model_card_index=_req(model, "cardIndex", int, w),
            survivors=_dids(p.get("survivors"), "survivors"),
            dropped=_dids(p.get("dropped"), "dropped"),
            commitments=tuple(commitments),
            aggregate=_req(agg, "digest", str, w),
            aggregate_encoding=_req(agg, "encoding", str, w),
            optimizer_state=None
            if p.get("optimizerState") is None
            else _req(p, "optimizerState", str, w),
            round_epsilon=opt(priv, "roundEpsilon"),
            epsilon=opt(priv, "epsilon"),
            epsilon_rdp=opt(priv, "epsilonRdp"),
            delta=opt(priv, "delta"),
            guarantee=None if priv.get("guarantee") is None else _req(priv, "guarantee", str, w),
            accuracy=opt(metrics, "accuracy"),
            clipped_fraction=opt(priv, "clippedFraction"),
            # Parsed in full by `edgetrust.data.consent`, which owns the format.
            consent=_req(p, "consent", dict, w) if "consent" in p else None,
        )
        for d in (record.input_model, record.output_model, record.aggregate):
            parse_digest(d)
        if record.optimizer_state is not None:
            parse_digest(record.optimizer_state)
        if record.aggregate_encoding not in ("uint32-sum", "float64-update"):
            raise InvalidInputError(f"{w}: unknown aggregate encoding")
        if record.guarantee is not None and record.guarantee not in GUARANTEES:
            raise InvalidInputError(f"{w}: unknown DP guarantee {record.guarantee!r}")
        return record


def _validate_config(statement: Statement, signer: str) -> None:
    cfg = RoundConfig.from_predicate(statement.predicate)
    if statement.subjects[0].sha256 != digest_hex(cfg.input_model):
        raise InvalidInputError("round config subject is not its input model")


def _validate_record(statement: Statement, signer: str) -> None:
    rec = RoundRecord.from_predicate(statement.predicate)
    if statement.subjects[0].sha256 != digest_hex(rec.output_model):
        raise InvalidInputError("round record subject is not its output model")


register_predicate_type(ROUND_CONFIG_PREDICATE_TYPE, _validate_config)
register_predicate_type(ROUND_PREDICATE_TYPE, _validate_record)


def sign_round_config(config: RoundConfig, coordinator: Identity) -> Envelope:
    """The signed config statement (subject: the input model)."""
    payload = encode_statement(
        [Subject(config.model_name, digest_hex(config.input_model))],
        ROUND_CONFIG_PREDICATE_TYPE,
        config.to_predicate(),
    )
    return sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, coordinator)


def sign_round_record(record: RoundRecord, model_name: str, coordinator: Identity) -> Envelope:
    """The signed round record (subject: the new model)."""
    payload = encode_statement(
        [Subject(model_name, digest_hex(record.output_model))],
        ROUND_PREDICATE_TYPE,
        record.to_predicate(),
    )
    return sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, coordinator)


def envelope_sha256(envelope: Envelope) -> str:
    """sha256 hex of an envelope's canonical JSON: what the log stores and records point to."""
    return hashlib.sha256(envelope.to_json()).hexdigest()
