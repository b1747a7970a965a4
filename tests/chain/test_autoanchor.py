"""AutoAnchor: the node's --anchor-every N, against the embedded log."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgetrust.chain import Chain, LogAnchor
from edgetrust.chain.autoanchor import AutoAnchor
from edgetrust.chain.watch import watch_log
from edgetrust.errors import InvalidInputError
from edgetrust.identity import Keystore
from edgetrust.log.service import LOG_KEY_NAME, Log
from tests.chain.conftest import funded


def test_anchors_every_n_entries(eth_tester_chain: Chain, edgetrust_home: Path) -> None:
    chain = eth_tester_chain
    operator = funded(chain)
    anchor, _ = LogAnchor.deploy(chain, funded(chain))
    with Log.open(edgetrust_home) as log:
        auto = AutoAnchor(
            anchor, operator, log, Keystore(edgetrust_home).load(LOG_KEY_NAME), every=4
        )
        sizes = []
        for i in range(10):
            log.append(b"entry %d" % i)
            if auto.maybe_anchor() is not None:
                sizes.append(log.size())
        assert sizes == [4, 8]
        assert anchor.latest(log.origin)[0] == 8
        anchor.verify_registration(log.origin)
        # The log now serves size 10, consistent with the anchored 8: no alarm.
        report = watch_log(anchor, log.origin, log)
        assert report.alarms == () and report.size == 10
        # A fresh AutoAnchor (a restarted node) picks up the anchored size from the chain.
        again = AutoAnchor(
            anchor, operator, log, Keystore(edgetrust_home).load(LOG_KEY_NAME), every=4
        )
        assert again.maybe_anchor() is None


@pytest.mark.parametrize("every", [0, -1, True])
def test_every_must_be_positive(eth_tester_chain: Chain, every: int) -> None:
    anchor, _ = LogAnchor.deploy(eth_tester_chain, funded(eth_tester_chain))
    with pytest.raises(InvalidInputError, match="every"):
        AutoAnchor(anchor, funded(eth_tester_chain), object(), object(), every=every)  # type: ignore[arg-type]
