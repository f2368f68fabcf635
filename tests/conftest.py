"""Shared fixtures. Learning tests (marked slow) run after every fast test."""

import pytest


def pytest_collection_modifyitems(config, items):
    # Fast tests first, so a broken unit shows up in seconds rather than after the learning runs.
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)


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
