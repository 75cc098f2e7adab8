"""Shared test paths: the real ilastik fixtures live beside the checkout in ../shared."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures" / "ilastik"
API = FIXTURES / "api"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The ilastik fixture folder; its absence is a failure, never a skip."""
    assert FIXTURES.is_dir(), f"ilastik fixtures not found at {FIXTURES}"
    return FIXTURES
