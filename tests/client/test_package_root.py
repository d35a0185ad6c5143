"""`from coordinator import X` offers exactly the client's names, loaded on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import coordinator
import coordinator.client


def test_the_root_offers_the_clients_names() -> None:
    assert sorted(coordinator.__all__) == sorted(coordinator.client.__all__)
    for name in coordinator.__all__:
        assert getattr(coordinator, name) is getattr(coordinator.client, name)


def test_the_pure_packages_load_without_the_client() -> None:
    code = "import sys, coordinator.saga, coordinator.twopc; print('coordinator.client' in sys.modules, 'aiohttp' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        coordinator.NoSuchThing  # noqa: B018
