"""A federated session's two roles, independent of transport: the coordinator and a client.

The `Coordinator` plans each round (checks the privacy budget, logs the signed round config,
derives the secure aggregation parameters from it), then completes it (averages the
aggregate into a new model, publishes the model card, logs the round record). A `ClientWorker`
checks the coordinator's signed config, trains on its own data from the global model, clips,
adds its share of DP noise and quantizes. Drivers (`collab.local`, `collab.flower`) move the
bytes between them.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.collab import robust
from edgetrust.collab.abort import check_neighbours
from edgetrust.collab.datasets import dataset_shape
from edgetrust.collab.dp import (
    DPConfig,
    PrivacyAccountant,
    add_client_noise,
    client_noise_std,
    clip_update,
    epsilon_after_rdp,
)
from edgetrust.collab.messages import MaskedInput
from edgetrust.collab.optim import ServerOptimizer, default_server_lr
from edgetrust.collab.rounds import (
    ROUND_CONFIG_PREDICATE_TYPE,
    ArtifactStore,
    Commitment,
    RoundConfig,
    RoundRecord,
    apply_update,
    envelope_sha256,
    mean_update,
    sign_round_config,
    sign_round_record,
)
from edgetrust.collab.secagg import SecAggConfig
from edgetrust.collab.training import (
    MLP,
    SCHEDULES,
    accuracy,
    flatten,
    mlp_weights_from_onnx,
    train_local,
    train_local_dp,
)
from edgetrust.dsse import Envelope, parse_envelope
from edgetrust.encoding import digest_bytes
from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.identity import Identity
from edgetrust.statement import open_signed_statement

__all__ = ["ClientWorker", "Coordinator", "RoundPlan", "RoundSummary", "SessionSpec"]

AGGREGATORS = ("mean", "median", "trimmed-mean", "krum")


@dataclass(frozen=True, kw_only=True)
class SessionSpec:
    """How a federated session runs; every field is validated at construction."""

    rounds: int = 10
    secagg: bool = True
    """Secure aggregation (the server sees only the sum); off allows robust aggregators."""
    aggregator: str = "mean"
    """Without secagg: "mean", "median", "trimmed-mean" or "krum" (see `collab.robust`)."""
    byzantine: int = 0
    """f for trimmed mean (values trimmed per side) and Krum."""
    threshold: int | None = None
    """Shamir threshold; default ⌊n/2⌋ + 1 (the least the consistency check allows)."""
    neighbours: int | None = None
    """SecAgg+ degree; None for the complete graph."""
    expected_dropout: float | None = None
    """The per-client dropout rate secure aggregation should survive: each round config
    states it with the abort bound of its graph, and a SecAgg+ degree whose bound exceeds
    1e-6 is refused before the round is logged (see `collab.abort`)."""
    modulus_bits: int = 32
    dp: DPConfig = field(default_factory=lambda: DPConfig(clip=1.0, noise_multiplier=0.0))
    server_optimizer: ServerOptimizer = field(
        default_factory=lambda: ServerOptimizer(name="fedyogi")
    )
    """The server optimizer acting on each round's mean update (FedYogi: best on non-IID
    digits in docs/fl.md's measurements)."""
    server_lr: float | None = None
    """η of the server optimizer; None: its default (1.0 for FedAvg, 0.1 adaptive)."""
    local_epochs: int = 5
    lr: float = 0.3
    batch_size: int = 16
    prox_mu: float = 0.0
    """FedProx μ (0: plain local SGD)."""
    lr_schedule: str = "constant"
    """Local learning-rate schedule: "constant" or "cosine"."""
    hidden: tuple[int, ...] = (32,)
    seed: int = 0
    model_name: str = "digits-fl"
    dataset: str = "digits"
    """What the clients hold: "digits", "digits-shifted" or "breast-cancer" (`collab.datasets`)."""

    def __post_init__(self) -> None:
        if not 1 <= self.rounds <= 10_000:
            raise InvalidInputError("`rounds` must be in 1..10000")
        dataset_shape(self.dataset)
        if self.aggregator not in AGGREGATORS:
            raise InvalidInputError(f"`aggregator` must be one of {', '.join(AGGREGATORS)}")
        if self.secagg and self.aggregator != "mean":
            raise InvalidInputError(
                "`aggregator` other than mean needs individual updates: turn off `secagg`"
            )
        if self.byzantine < 0:
            raise InvalidInputError("`byzantine` must be non-negative")
        if self.expected_dropout is not None and not (
            isinstance(self.expected_dropout, int | float) and 0 <= self.expected_dropout < 1
        ):
            raise InvalidInputError("`expected_dropout` must be in [0, 1)")
        for name in ("server_lr", "lr", "prox_mu"):
            value = getattr(self, name)
            if value is None and name == "server_lr":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInputError(f"`{name}` must be a number")
            if not math.isfinite(value) or value < 0 or (value == 0 and name != "prox_mu"):
                raise InvalidInputError(
                    f"`{name}` must be {'non-negative' if name == 'prox_mu' else 'positive'}"
                    " and finite"
                )
        if self.lr_schedule not in SCHEDULES:
            raise InvalidInputError(f"`lr_schedule` must be one of {', '.join(SCHEDULES)}")
        if self.dp.sampling_rate != 1.0:
            # The drivers invite every client to every round; accounting for Poisson
            # sampling that did not happen would understate ε.
            raise InvalidInputError(
                "`sampling_rate` must be 1.0 in a session: client sampling is not implemented"
            )
        if self.local_epochs < 1 or self.batch_size < 1:
            raise InvalidInputError("`local_epochs` and `batch_size` must be at least 1")
        if self.dp.distributed and not self.secagg:
            raise InvalidInputError(
                "`distributed` sample-level DP splits the noise across clients, which protects "
                "only the sum: turn on `secagg`"
            )

    @property
    def sample_level(self) -> bool:
        """Whether clients run DP-SGD (sample-level DP with noise), not DP-FedAvg."""
        return self.dp.enabled and self.dp.level == "sample"

    @property
    def dp_steps_per_round(self) -> int:
        """Subsampled Gaussian steps per round the accountant composes.

        1 for user-level DP; for sample-level the local DP-SGD steps, ⌈local_epochs / q⌉,
        so each client sees its data `local_epochs` times in expectation.
        """
        if not self.sample_level or self.dp.distributed:
            return 1
        return max(1, math.ceil(self.local_epochs / self.dp.accounting_rate - 1e-9))

    @property
    def effective_server_lr(self) -> float:
        """η as logged: `server_lr`, or the optimizer's default when it is None."""
        if self.server_lr is not None:
            return float(self.server_lr)
        return default_server_lr(self.server_optimizer.name)

    def threshold_for(self, n: int) -> int:
        """The Shamir threshold for `n` participants."""
        group = n if self.neighbours is None or self.neighbours >= n - 1 else self.neighbours + 1
        return self.threshold if self.threshold is not None else group // 2 + 1


@dataclass(frozen=True)
class RoundPlan:
    """A round as logged before it starts: what clients need to take part."""

    config: RoundConfig
    envelope: Envelope
    """The signed config statement (its digest is the secure aggregation round id)."""
    config_index: int
    round_id: bytes
    model_bytes: bytes
    """The input model's ONNX bytes."""
    secagg: SecAggConfig | None
    consent: Any = None
    """The consent admission of the participants (see `edgetrust.data.consent`), or None."""


@dataclass(frozen=True)
class RoundSummary:
    """What a round produced, for progress displays and results."""

    round: int
    survivors: int
    dropped: int
    accuracy: float | None
    epsilon: float | None
    round_epsilon: float | None
    model: str
    """Digest of the new model."""
    record_index: int
    seconds: float


def _float32(params: Sequence[npt.NDArray[Any]]) -> tuple[list[Any], list[Any]]:
    return (
        [np.asarray(p, dtype=np.float32) for p in params[0::2]],
        [np.asarray(p, dtype=np.float32) for p in params[1::2]],
    )


def _params(weights: Sequence[Any], biases: Sequence[Any]) -> list[npt.NDArray[np.float64]]:
    out: list[npt.NDArray[np.float64]] = []
    for w, b in zip(weights, biases, strict=True):
        out += [np.asarray(w, dtype=np.float64), np.asarray(b, dtype=np.float64)]
    return out


class Coordinator:
    """The server side of a federated session: plans, logs and completes rounds.

    `log` is anything with ``append(bytes) -> int`` (an `edgetrust.log.Log`). Models go to
    the `ModelRegistry` and aggregates to the `ArtifactStore` in `home`, so an auditor with
    the same home can recompute every model.
    """

    def __init__(
        self,
        *,
        spec: SessionSpec,
        identity: Identity,
        log: Any,
        home: str | os.PathLike[str] | None = None,
        session: str | None = None,
        eval_data: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
        consent: Any = None,
    ) -> None:
        from edgetrust.models import ModelRegistry
        from edgetrust.zoo import mlp_to_onnx

        self.spec = spec
        self.identity = identity
        self.log = log
        self.registry = ModelRegistry(home)
        self.artifacts = ArtifactStore(home)
        self.session = session or secrets.token_hex(16)
        features, classes = dataset_shape(spec.dataset)
        self.model = MLP((features, *spec.hidden, classes))
        self.accountant = PrivacyAccountant(spec.dp, steps_per_round=spec.dp_steps_per_round)
        self.eval_data = eval_data
        self.consent = consent
        """Admits participants under their grants (`edgetrust.data.consent`); None: no check."""
        self.round = 0
        self.previous_record: str | None = None
        self.optimizer_state: npt.NDArray[np.float64] | None = None
        """The server optimizer's state after the last round (None: none yet, or stateless)."""
        weights, biases = _float32(self.model.init(spec.seed))
        self.model_bytes = mlp_to_onnx(weights, biases, name=spec.model_name).SerializeToString()
        card, envelope = self.registry.add_bytes(
            self.model_bytes, publisher=identity, name=spec.model_name, version=f"{self.session}.0"
        )
        self.log.append(envelope.to_json())
        self.model_digest = card.digest
        self.base_model = card.digest
        """The session's first model: what a ``train`` grant names."""

    def plan_round(self, participants: Sequence[str]) -> RoundPlan:
        """Check the budget, then log the signed config of the next round.

        Raises:
            PrivacyBudgetExceededError: the round would exceed `epsilon_max`; nothing is logged.
        """
        spec, dp = self.spec, self.spec.dp
        if dp.enabled:
            self.accountant.check_next_round()
        parts = tuple(sorted(set(participants)))
        n = len(parts)
        if n < 2:
            raise InvalidInputError("a round needs at least 2 participants")
        threshold = spec.threshold_for(n)
        steps = spec.dp_steps_per_round
        # The abort bound is stated (and checked by RoundConfig) only with secure aggregation.
        dropout = spec.expected_dropout if spec.secagg else None
        if spec.sample_level and not dp.distributed:
            # DP-SGD: each device adds z·C to every step's gradient sum itself.
            noise = dp.noise_multiplier * dp.clip
            # A step moves a coordinate by about lr·C (the clipped mean) plus its noise; the
            # quantizer clips beyond this bound, which is post-processing and costs no privacy.
            bound = spec.lr * (2 * steps * dp.clip + 6 * math.sqrt(steps) * noise / spec.batch_size)
        else:
            noise = client_noise_std(
                clip=dp.clip, noise_multiplier=dp.noise_multiplier, min_survivors=threshold
            )
            # Updates are clipped to norm C, so each coordinate is within ±C before noise;
            # the noise reaches past C + 6σ with probability ~2e-9 per coordinate.
            bound = dp.clip + 6 * noise
            if spec.sample_level:  # distributed DP-SGD: one step, its share of the noise
                bound = spec.lr * (2 * dp.clip + 6 * noise / spec.batch_size)
        config = RoundConfig(
            session=self.session,
            round=self.round + 1,
            model_name=spec.model_name,
            input_model=self.model_digest,
            previous_record=self.previous_record,
            participants=parts,
            secagg=spec.secagg,
            threshold=threshold,
            min_survivors=threshold,
            modulus_bits=spec.modulus_bits,
            neighbours=spec.neighbours,
            quant_bound=bound,
            clip=dp.clip,
            noise_multiplier=dp.noise_multiplier,
            client_noise_std=noise,
            delta=dp.delta,
            epsilon_max=dp.epsilon_max,
            sampling_rate=dp.sampling_rate,
            guarantee=dp.guarantee if spec.sample_level else "user-level",
            steps_per_round=steps,
            example_rate=dp.accounting_rate if spec.sample_level else None,
            distributed=spec.sample_level and dp.distributed,
            aggregator="secagg-sum" if spec.secagg else spec.aggregator,
            server_lr=spec.effective_server_lr,
            server_optimizer=spec.server_optimizer,
            prox_mu=spec.prox_mu,
            lr_schedule=spec.lr_schedule,
            expected_dropout=dropout,
            abort_bound=None
            if dropout is None
            else check_neighbours(n, spec.neighbours, threshold, float(dropout)),
            local_epochs=spec.local_epochs,
            lr=spec.lr,
            batch_size=spec.batch_size,
        )
        config.quantizer  # noqa: B018  (validates modulus bits against the participant count)
        # Consent is checked last and before anything is logged: a refused round leaves no trace.
        admission = None if self.consent is None else self.consent.admit(self, parts)
        envelope = sign_round_config(config, self.identity)
        index = self.log.append(envelope.to_json())
        round_id = bytes.fromhex(envelope_sha256(envelope))
        secagg = None
        if spec.secagg:
            secagg = SecAggConfig(
                round_id=round_id,
                participants=parts,
                threshold=threshold,
                vector_length=self.model.num_params,
                modulus_bits=spec.modulus_bits,
                neighbours=spec.neighbours,
                min_survivors=threshold,
            )
        self.round += 1
        return RoundPlan(config, envelope, index, round_id, self.model_bytes, secagg, admission)

    def complete_round(
        self,
        plan: RoundPlan,
        *,
        inputs: Sequence[MaskedInput],
        total: npt.NDArray[np.uint32] | None = None,
        started: float | None = None,
    ) -> RoundSummary:
        """Turn the round's aggregate into the next model, publish it and log the record.

        With secure aggregation `total` is the unmasked sum and `inputs` the survivors'
        signed masked inputs; without it `inputs` are the survivors' quantized updates, which
        the configured (robust) aggregator combines.
        """
        from edgetrust.zoo import mlp_to_onnx

        cfg, spec = plan.config, self.spec
        survivors = tuple(sorted(m.sender for m in inputs))
        if len(survivors) < cfg.min_survivors:
            raise VerificationError("fewer inputs than the round's min_survivors", step="aggregate")
        by_sender = {m.sender: m for m in inputs}
        commitments = tuple(Commitment.from_message(by_sender[d]) for d in survivors)
        if spec.secagg:
            if total is None:
                raise InvalidInputError("a secure aggregation round needs the unmasked total")
            aggregate: npt.NDArray[Any] = total
            encoding = "uint32-sum"
        else:
            q = cfg.quantizer
            vectors = [q.dequantize(by_sender[d].vector) for d in survivors]
            aggregate = self._robust(vectors)
            encoding = "float64-update"
        aggregate_digest = self.artifacts.put(aggregate)
        update = mean_update(cfg, aggregate, encoding, len(survivors))
        direction, new_state = cfg.server_optimizer.step(update, self.optimizer_state)
        state_digest = None if new_state is None else self.artifacts.put(new_state)
        weights, biases = mlp_weights_from_onnx(self.model_bytes)
        new_w, new_b = apply_update(weights, biases, direction, cfg.server_lr)
        new_bytes = mlp_to_onnx(new_w, new_b, name=cfg.model_name).SerializeToString()
        card, card_env = self.registry.add_bytes(
            new_bytes,
            publisher=self.identity,
            name=cfg.model_name,
            version=f"{self.session}.{cfg.round}",
        )
        card_index = self.log.append(card_env.to_json())
        eps = round_eps = eps_rdp = None
        if spec.dp.enabled:
            eps = self.accountant.record_round()
            round_eps = self.accountant.round_epsilon()
            eps_rdp = epsilon_after_rdp(
                cfg.round,
                noise_multiplier=cfg.noise_multiplier,
                sampling_rate=cfg.accounting_rate,
                delta=cfg.delta,
                steps_per_round=cfg.steps_per_round,
            )
        else:
            self.accountant.rounds_done += 1
        acc = None
        if self.eval_data is not None:
            acc = accuracy(self.model, _params(new_w, new_b), *self.eval_data)
        record = RoundRecord(
            session=self.session,
            round=cfg.round,
            config=plan.round_id.hex(),
            config_index=plan.config_index,
            input_model=cfg.input_model,
            output_model=card.digest,
            model_card=envelope_sha256(card_env),
            model_card_index=card_index,
            survivors=survivors,
            dropped=tuple(d for d in cfg.participants if d not in set(survivors)),
            commitments=commitments,
            aggregate=aggregate_digest,
            aggregate_encoding=encoding,
            optimizer_state=state_digest,
            round_epsilon=round_eps,
            epsilon=eps,
            epsilon_rdp=eps_rdp,
            delta=cfg.delta if spec.dp.enabled else None,
            guarantee=cfg.guarantee if spec.dp.enabled else None,
            accuracy=acc,
            consent=None if plan.consent is None else plan.consent.to_predicate(),
        )
        record_env = sign_round_record(record, cfg.model_name, self.identity)
        record_index = self.log.append(record_env.to_json())
        if self.consent is not None:
            self.consent.record_round(self, plan, record, record_index)
        self.previous_record = envelope_sha256(record_env)
        self.model_bytes, self.model_digest = new_bytes, card.digest
        self.optimizer_state = new_state
        return RoundSummary(
            cfg.round,
            len(survivors),
            len(record.dropped),
            acc,
            eps,
            round_eps,
            card.digest,
            record_index,
            time.perf_counter() - started if started is not None else 0.0,
        )

    def _robust(self, vectors: list[npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
        agg, f = self.spec.aggregator, self.spec.byzantine
        if agg == "median":
            return robust.coordinate_median(vectors)
        if agg == "trimmed-mean":
            return robust.trimmed_mean(vectors, trim=f)
        if agg == "krum":
            return robust.krum(vectors, byzantine=f, select=max(1, len(vectors) - f))
        result: npt.NDArray[np.float64] = np.mean(np.stack(vectors), axis=0)
        return result


class ClientWorker:
    """A client's side of a session: its identity, its private data, its local training."""

    def __init__(
        self,
        *,
        identity: Identity,
        x: npt.ArrayLike,
        y: npt.ArrayLike,
        coordinator: str | None = None,
    ) -> None:
        self.identity = identity
        self.did = identity.did
        self.x = np.asarray(x, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.int64)
        self.coordinator = coordinator
        """The coordinator DID this client trusts; None to accept the first one it sees."""

    def open_config(self, envelope: bytes | Envelope) -> tuple[RoundConfig, bytes]:
        """Verify the coordinator's signed round config; return it and the round id.

        Raises:
            VerificationError: bad signature, another coordinator, or a config leaving this
                client out.
        """
        env = envelope if isinstance(envelope, Envelope) else parse_envelope(envelope)
        signed = open_signed_statement(env)
        if signed.statement.predicate_type != ROUND_CONFIG_PREDICATE_TYPE:
            raise InvalidInputError("not a federated round config")
        if self.coordinator is None:
            self.coordinator = signed.signer
        if signed.signer != self.coordinator:
            raise VerificationError("round config is signed by another coordinator", step="config")
        config = RoundConfig.from_predicate(signed.statement.predicate)
        if self.did not in config.participants:
            raise VerificationError("this client is not a participant of the round", step="config")
        return config, bytes.fromhex(envelope_sha256(env))

    def compute_update(
        self, config: RoundConfig, model_bytes: bytes, *, seed: int
    ) -> npt.NDArray[np.uint32]:
        """Train locally from the round's model; return the clipped, noised, quantized update."""
        if digest_bytes(model_bytes) != config.input_model:
            raise VerificationError("model bytes are not the round's input model", step="model")
        weights, biases = mlp_weights_from_onnx(model_bytes)
        start = _params(weights, biases)
        model = MLP((start[0].shape[0], *(w.shape[1] for w in weights)))
        # Noise, sampling and rounding draw from fresh OS entropy, never from `seed`: a
        # coordinator that could predict a client's noise could subtract it.
        rng = np.random.default_rng()
        if config.guarantee == "sample-level" and config.example_rate is not None:
            trained = train_local_dp(
                model,
                start,
                self.x,
                self.y,
                steps=config.steps_per_round,
                sampling_rate=config.example_rate,
                clip=config.clip,
                noise_multiplier=config.client_noise_std / config.clip,
                expected_batch=config.batch_size,
                lr=config.lr,
                rng=rng,
                prox_mu=config.prox_mu,
                schedule=config.lr_schedule,
            )
            # Already private: every step was; the update needs no clipping or more noise.
            return config.quantizer.quantize(flatten(trained) - flatten(start), rng)
        trained = train_local(
            model,
            start,
            self.x,
            self.y,
            epochs=config.local_epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            seed=seed,
            prox_mu=config.prox_mu,
            schedule=config.lr_schedule,
        )
        update, _ = clip_update(flatten(trained) - flatten(start), config.clip)
        noisy = add_client_noise(update, std=config.client_noise_std, rng=rng)
        return config.quantizer.quantize(noisy, rng)
