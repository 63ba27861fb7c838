"""`make conformance` in small: octavia-tempest-plugin against OpenHA behind a real
Keystone (`conformance.tempest`), a few API tests only (providers, a load balancer's
create, show and status tree), so that `make test` notices when the harness or OpenHA's
Keystone front breaks; the whole suite is `make conformance`."""

from __future__ import annotations

from pathlib import Path

import pytest
from conformance import keystone as harness
from conformance import tempest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not harness.available(), reason="no .venv-keystone (make keystone-venv)"),
]

SUBSET = (
    r"octavia_tempest_plugin\.tests\.api\.v2\."
    r"(test_provider\.ProviderAPITest\.test_provider_list"
    r"|test_load_balancer\.LoadBalancerAPITest\.test_load_balancer_(show|show_status)\b)"
)


def test_a_subset_of_octavias_tempest_plugin_passes(tmp_path: Path) -> None:
    counts, out, finished = tempest.run(tmp_path, SUBSET, concurrency=1, deadline=600)
    assert finished, out[-3000:]
    assert counts.get("failed", 0) == 0, "\n".join(tempest.failed_tests(out)) + out[-3000:]
    assert counts.get("passed", 0) == 3, (counts, out[-3000:])
