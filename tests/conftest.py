"""Shared fixtures and test order: unit, then integration, then learning (slow) tests."""

import pytest


def pytest_collection_modifyitems(config, items):
    # Unit tests first, then integration, then learning tests: a broken unit shows up in seconds.
    def tier(item):
        if item.get_closest_marker("slow"):
            return 2
        return 1 if item.get_closest_marker("integration") else 0

    items.sort(key=tier)


@pytest.fixture
def tiny():
    from purejaxppo.ppo import Config

    return Config(
        env="CartPole-v1",
        num_envs=2,
        num_steps=8,
        total_timesteps=64,
        update_epochs=2,
        num_minibatches=2,
        hidden_sizes=(8,),
    )
