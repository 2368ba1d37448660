"""Shared fixtures: a test CA, and a running appliance in a subprocess."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# The checkout under test comes first, here and in every subprocess the tests
# start (twistd, the client): a second checkout (a git worktree, a CI clone)
# must not test the code an earlier editable install points at.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

from support.ca import TestCA  # noqa: E402

# The fuzz suite's budget (tests/test_fuzz_*.py, docs/fuzzing.md): fixed and
# derandomized under CI=true so CI runs the same examples every time;
# HYPOTHESIS_PROFILE=long for a longer local hunt.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "phaserlink", max_examples=200, deadline=None, derandomize=os.environ.get("CI") == "true",
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("long", parent=settings.get_profile("phaserlink"), max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "phaserlink"))


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def appliance(tmp_path):
    """An unstarted appliance in tmp_path; set .sections, then .start()."""
    from support.appliance import Appliance

    app = Appliance(tmp_path)
    yield app
    app.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A mounted 8 MB tmpfs at tmp_path/disk (root; fails under CI without)."""
    from support.tmpfs import SmallDisk

    disk = SmallDisk(tmp_path / "disk").mount()
    yield disk
    disk.unmount()
