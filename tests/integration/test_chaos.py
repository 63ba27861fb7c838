"""The short fault-injection run of `make test`: random kills under a random workload, then
convergence, loaded state = desired state, traffic as desired, nothing left (see chaos.py).

`make soak` runs the long version (`chaos.py`, minutes, three agents and pairs). The seed is
printed; `OPENHA_CHAOS_SEED=<seed>` replays the run's choices.
"""

from __future__ import annotations

import pytest
from chaos import Options, run_chaos, seed_from_env

pytestmark = pytest.mark.integration


def test_random_kills_under_a_workload_converge() -> None:
    result = run_chaos(
        Options(seed=seed_from_env(), duration=25.0, agents=2, max_lbs=4, kill_every=(1.0, 2.5))
    )
    # A run that killed nothing, or changed nothing, would prove nothing.
    assert sum(result["kills"].values()) >= 5, result["kills"]
    accepted = [
        n for k, n in result["outcomes"].items() if k.endswith(("200", "201", "202", "204"))
    ]
    assert sum(accepted) >= 10, result["outcomes"]
