"""Shared fixtures: the device under test comes from PML_VMF_TEST_DEVICE (default cpu), as timm's tests do."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEST_DEVICE = torch.device(os.environ.get("PML_VMF_TEST_DEVICE", "cpu"))


@pytest.fixture
def device() -> torch.device:
    return TEST_DEVICE


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


_REPORTED: "list[str]" = []


@pytest.fixture
def report():
    """Lines a test wants shown in the terminal summary (measured numbers, not assertions)."""
    return _REPORTED.append


def pytest_terminal_summary(terminalreporter) -> None:
    if _REPORTED:
        terminalreporter.section("measured by the tests")
        for line in _REPORTED:
            terminalreporter.write_line(line)
