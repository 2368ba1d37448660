"""Shared fixtures: a test CA, and a running appliance in a subprocess."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support.ca import TestCA  # noqa: E402


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
