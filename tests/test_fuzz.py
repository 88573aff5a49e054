"""Mutated bytes of every reader's seed file: a load or a clean error, never another
exception, never a payload run (a few seconds; benchmarks/fuzz.py runs 10,000+)."""
import random

import pytest

from advrbd_plugin import fuzz

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@pytest.mark.parametrize("fmt", sorted(fuzz.READERS))
def test_mutated_files_load_or_fail_cleanly(fmt, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    marker = folder / "PWNED"
    seed = fuzz.SEEDS(str(marker))[fmt]
    reader = fuzz.READERS[fmt]

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=1, max_value=3))
    def check(salt, rounds):
        rng = random.Random(salt)
        data = seed
        for _ in range(rounds):
            data = fuzz.mutate(data, rng)
        outcome = fuzz.attempt(reader, folder / f"input.{fmt.split()[0]}", data)
        assert not outcome.startswith("uncaught"), outcome
        assert not marker.exists(), "a pickle payload ran"

    check()


def test_unmutated_seeds_load_and_payloads_are_refused(tmp_path):
    marker = tmp_path / "PWNED"
    for fmt, data in fuzz.SEEDS(str(marker)).items():
        outcome = fuzz.attempt(fuzz.READERS[fmt], tmp_path / "f", data)
        assert outcome == ("clean error" if "payload" in fmt else "loaded"), (fmt, outcome)
    assert not marker.exists()
