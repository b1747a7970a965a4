"""Private collaboration between local models: federated learning that the log can audit.

Secure aggregation (`secagg`, `messages`, `shamir`, `quantize`), differential privacy with
an accountant (`dp`), robust aggregation (`robust`), round records (`rounds`) and their
audit (`audit`), the coordinator and client roles (`session`), local training (`training`),
and two drivers: `local` (in-process) and `flower` (Flower 1.42 deployments; import it
explicitly, it needs the `fl` extra). See docs/fl.md.
"""

from edgetrust.collab.audit import AuditReport, audit_log
from edgetrust.collab.dp import (
    DPConfig,
    PrivacyAccountant,
    PrivacyBudgetExceededError,
    epsilon_after,
    epsilon_after_rdp,
)
from edgetrust.collab.local import SessionResult, run_secagg_round, simulate
from edgetrust.collab.quantize import Quantizer
from edgetrust.collab.rounds import (
    ROUND_CONFIG_PREDICATE_TYPE,
    ROUND_PREDICATE_TYPE,
    RoundConfig,
    RoundRecord,
)
from edgetrust.collab.secagg import (
    RoundAbortedError,
    SecAggClient,
    SecAggConfig,
    SecAggResult,
    SecAggServer,
    Stage,
)
from edgetrust.collab.session import ClientWorker, Coordinator, RoundSummary, SessionSpec

__all__ = [
    "ROUND_CONFIG_PREDICATE_TYPE",
    "ROUND_PREDICATE_TYPE",
    "AuditReport",
    "ClientWorker",
    "Coordinator",
    "DPConfig",
    "PrivacyAccountant",
    "PrivacyBudgetExceededError",
    "Quantizer",
    "RoundAbortedError",
    "RoundConfig",
    "RoundRecord",
    "RoundSummary",
    "SecAggClient",
    "SecAggConfig",
    "SecAggResult",
    "SecAggServer",
    "SessionResult",
    "SessionSpec",
    "Stage",
    "audit_log",
    "epsilon_after",
    "epsilon_after_rdp",
    "run_secagg_round",
    "simulate",
]
