"""Population-based training: selection, copy and explore by hand; the advance program."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from purejaxppo import pbt
from purejaxppo.ppo import HPARAM_LIMITS, HParams, make_trainer
from purejaxppo.sweep import Draw

ROOT = Path(__file__).resolve().parent.parent

NAN = float("nan")


def options(**changes):
    base = dict(every=2, fraction=0.25, factors=(0.8, 1.25), resample=0.0)
    base["space"] = (("learning_rate", Draw("loguniform", 1e-4, 1e-2)),)
    return pbt.PBTOptions(**{**base, **changes})


def test_scores_are_the_episode_weighted_mean_of_the_interval_and_divergence_any_nonfinite():
    metrics = {
        # run 0: 2 episodes of mean 10, then 1 of 4 -> (20 + 4) / 3 = 8
        # run 1: no episode ends in the interval -> NaN
        # run 2: 1 episode of 3, and its second update went non-finite
        "episode_return": jnp.array([[10.0, 4.0], [NAN, NAN], [3.0, NAN]]),
        "episodes": jnp.array([[2, 1], [0, 0], [1, 0]]),
        "finite": jnp.array([[1, 1], [1, 1], [1, 0]]),
    }
    score, diverged = pbt.member_scores(metrics)
    np.testing.assert_allclose(np.asarray(score), [8.0, NAN, 3.0])
    assert np.asarray(diverged).tolist() == [False, False, True]


def test_truncation_selection_on_a_scripted_population():
    # 8 runs then 2 padding runs (a device multiple of 5 x 2). fraction 0.25 of 8 -> 2 replaced.
    score = jnp.array([5.0, 1.0, 7.0, NAN, 3.0, 9.0, 2.0, 8.0, 100.0, 100.0])
    diverged = jnp.zeros(10, bool).at[4].set(True)
    # Worst first: 4 (diverged), 3 (no episode), 1 (1.0), 6 (2.0), 0, 2, 7 (8.0), 5 (9.0).
    # Bottom 2: runs 4 and 3; top 2: runs 7 and 5. Padding (score 100) takes no part.
    for seed in range(20):
        parent = np.asarray(pbt.select_parents(score, diverged, 8, 0.25, jax.random.key(seed)))
        kept = [0, 1, 2, 5, 6, 7, 8, 9]
        assert parent[kept].tolist() == kept
        assert parent[3] in (5, 7) and parent[4] in (5, 7)
    # Each parent is drawn uniformly from the top: both appear over the seeds.
    drawn = {
        int(pbt.select_parents(score, diverged, 8, 0.25, jax.random.key(s))[3]) for s in range(20)
    }
    assert drawn == {5, 7}


def test_every_diverged_run_is_replaced_even_beyond_the_fraction():
    score = jnp.array([5.0, 1.0, 7.0, NAN, 3.0, 9.0, 2.0, 8.0])
    diverged = jnp.zeros(8, bool).at[jnp.array([1, 4, 6])].set(True)
    # Worst first: 1, 4, 6 (diverged, in run order), 3, 0, 2, 7, 5: the bottom 2 (1 and 4) and
    # the third diverged run (6) are replaced; run 3 (no episode, position 3) is kept.
    parent = np.asarray(pbt.select_parents(score, diverged, 8, 0.25, jax.random.key(0)))
    assert [i for i in range(8) if parent[i] != i] == [1, 4, 6]
    assert set(parent[[1, 4, 6]].tolist()) <= {5, 7}
    # Ties keep the run order: equal scores, the lower index counts as worse.
    parent = np.asarray(
        pbt.select_parents(jnp.ones(4), jnp.zeros(4, bool), 4, 0.25, jax.random.key(0))
    )
    assert parent.tolist() == [3, 1, 2, 3]


def test_explore_perturbs_parents_values_within_the_field_limits():
    hp = jax.tree.map(lambda x: jnp.full(4, x, jnp.float32), HParams())
    hp = hp.replace(
        learning_rate=jnp.array([1e-3, 2e-3, 4e-3, 8e-3]), gamma=jnp.array([0.9, 0.99, 0.95, 0.97])
    )
    parent = jnp.array([0, 2, 2, 1])  # run 1 copies 2, run 3 copies 1; 0 and 2 kept
    space = (
        ("learning_rate", Draw("loguniform", 1e-4, 1e-2)),
        ("gamma", (0.9, 0.99)),
    )
    new = pbt.explore(hp, parent, 4, options(space=space, factors=(0.8, 1.25)), jax.random.key(3))
    lr, gamma = np.asarray(new.learning_rate), np.asarray(new.gamma)
    assert lr[0] == np.float32(1e-3) and lr[2] == np.float32(4e-3)  # kept runs keep theirs
    assert gamma[0] == np.float32(0.9) and gamma[2] == np.float32(0.95)
    # Moved: the parent's value times 0.8 or 1.25 (float32 products).
    for run, par in ((1, 2), (3, 1)):
        choices = [
            np.float32(np.asarray(hp.learning_rate)[par]) * np.float32(f) for f in (0.8, 1.25)
        ]
        assert lr[run] in choices
    # gamma 0.99 x 1.25 > 1 is clipped to the field's upper limit 1.0.
    assert gamma[3] in (np.float32(0.99) * np.float32(0.8), 1.0)
    assert np.all(gamma <= HPARAM_LIMITS["gamma"][1])
    # resample 1: every moved run's fields are fresh draws from the space.
    new = pbt.explore(hp, parent, 4, options(space=space, resample=1.0), jax.random.key(4))
    lr, gamma = np.asarray(new.learning_rate), np.asarray(new.gamma)
    assert 1e-4 <= lr[1] <= 1e-2 and 1e-4 <= lr[3] <= 1e-2
    assert gamma[1] in (np.float32(0.9), np.float32(0.99)) and gamma[3] in (
        np.float32(0.9),
        np.float32(0.99),
    )
    # Other fields never move.
    assert np.asarray(new.clip_coef).tolist() == np.asarray(hp.clip_coef).tolist()


def test_many_steps_of_explore_stay_within_every_limit():
    hp = jax.tree.map(lambda x: jnp.full(8, x, jnp.float32), HParams())
    space = tuple((name, (0.5,)) for name in ("gamma", "gae_lambda", "clip_coef", "learning_rate"))
    opts = options(space=space, factors=(0.5, 3.0), resample=0.1)
    for i in range(30):
        parent = jnp.roll(jnp.arange(8), 1 + i % 3)
        hp = pbt.explore(hp, parent, 8, opts, jax.random.key(i))
        for name, _ in space:
            low, high = HPARAM_LIMITS[name]
            value = np.asarray(getattr(hp, name))
            assert np.all((value >= low) & (value <= high)), (name, value)


def bits(tree):
    """Leaves as NumPy arrays, PRNG keys as their data."""
    return [
        np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
        for x in jax.tree.leaves(tree)
    ]


@pytest.mark.integration  # compiles a trainer
def test_a_copied_run_continues_bit_identically_to_its_parent_given_the_same_key():
    trainer = make_trainer(tiny_config())
    hp = jax.tree.map(lambda x: jnp.full(3, x, jnp.float32), HParams())
    state = jax.vmap(trainer.init)(jax.random.split(jax.random.key(0), 3), hp)

    def run(s, n):
        return jax.vmap(lambda s1, h: jax.lax.scan(lambda c, _: trainer.update(c, h), s1, None, n))(
            s, hp
        )

    state, _ = jax.jit(run, static_argnums=1)(state, 2)
    copied = pbt.copy_members(state, jnp.array([0, 0, 2]))
    # Run 1 is now run 0 except its key; the rest of its state is run 0's to the bit.
    no_key = jnp.zeros(3)
    for a, b in zip(
        bits(copied._replace(key=no_key)), bits(state._replace(key=no_key)), strict=True
    ):
        np.testing.assert_array_equal(a[1], b[0])
    assert not np.array_equal(bits(copied.key)[0][1], bits(state.key)[0][0])
    # Given run 0's key too, it trains on exactly as run 0 does.
    same_key = copied._replace(key=copied.key.at[1].set(copied.key[0]))
    after, metrics = jax.jit(run, static_argnums=1)(same_key, 3)
    for leaf in bits(after):
        np.testing.assert_array_equal(leaf[1], leaf[0])
    for value in metrics.values():
        np.testing.assert_array_equal(np.asarray(value[1]), np.asarray(value[0]))


def test_options_refusals_name_the_flag():
    cases = [
        (dict(every=0), "--pbt-every must be an integer >= 1"),
        (dict(fraction=0.6), "--pbt-fraction must lie in (0, 0.5]"),
        (dict(factors=(0.8, -1.0)), "--pbt-perturb must be positive factors"),
        (dict(resample=1.5), "--pbt-resample must lie in [0, 1]"),
        (dict(space=()), "--pbt-every evolves the --sweep fields"),
        (dict(space=(("num_envs", (8.0,)),)), "'num_envs' changes the compiled program"),
    ]
    for changes, text in cases:
        with pytest.raises(ValueError, match=None) as err:
            pbt.check_options(options(**changes))
        assert text in str(err.value)
    with pytest.raises(ValueError) as err:
        pbt.check_options(options(fraction=0.25), population=3)
    assert "replaces none" in str(err.value) and "at least 4 runs" in str(err.value)
    pbt.check_options(options(), population=4)
    # The record round-trips.
    opts = options(
        space=(("learning_rate", Draw("loguniform", 1e-4, 1e-2)), ("gamma", (0.9, 0.99)))
    )
    assert pbt.PBTOptions.from_record(json.loads(json.dumps(opts.record()))) == opts


def test_lineage_ancestry_and_schedule_by_hand():
    # 3 runs, every 2 updates, 6 updates: steps after updates 2 and 4 (columns 1 and 3).
    parent = np.array([[0, 0, 0, 0, 0, 0], [1, 0, 1, 1, 1, 1], [2, 2, 2, 1, 2, 2]])
    lr = np.array(
        [[1, 1, 1, 1, 1, 1], [2, 0.8, 0.8, 0.8, 0.8, 0.8], [3, 3, 3, 0.64, 0.64, 0.64]], np.float32
    )
    history = {pbt.PARENT: parent, "pbt_learning_rate": lr}
    lin = pbt.lineage(history, ["learning_rate"], every=2)
    assert lin.updates.tolist() == [2, 4]
    assert lin.parent.tolist() == [[0, 0], [0, 1], [2, 1]]
    np.testing.assert_allclose(lin.hparams[..., 0], [[1, 1], [0.8, 0.8], [3, 0.64]])
    # Run 2 at the end: it copied run 1 at step 1, which had copied run 0 at step 0.
    assert pbt.ancestry(lin.parent, 2).tolist() == [0, 1, 2]
    initial = np.array([[1.0], [2.0], [3.0]])
    np.testing.assert_allclose(pbt.schedule(lin, initial, 2)[:, 0], [1.0, 0.8, 0.64], rtol=1e-6)
    assert pbt.ancestry(lin.parent, 0).tolist() == [0, 0, 0]


@pytest.mark.integration  # compiles a trainer
def test_advance_steps_at_multiples_of_every_and_not_at_the_end():
    config = tiny_config(total_timesteps=16 * 5)  # 5 updates of 16 steps
    trainer = make_trainer(config)
    n = 4
    hp = jax.tree.map(lambda x: jnp.full(n, x, jnp.float32), HParams())
    hp = hp.replace(learning_rate=jnp.array([1e-4, 1e-3, 1e-2, 3e-2], jnp.float32))
    opts = options(every=2, fraction=0.25)
    advance = pbt.make_advance(trainer.update, config.num_updates, n, 7, opts)
    state = jax.vmap(trainer.init)(jax.random.split(jax.random.key(1), n), hp)
    run = jax.jit(advance, static_argnums=2)
    s1, m1 = run(state, hp, 4)  # updates 1-4: steps after 2 and 4
    hp1 = hp.replace(learning_rate=m1["pbt_learning_rate"][:, -1])
    s2, m2 = run(s1, hp1, 1)  # update 5, the last: no step
    parent = np.concatenate([np.asarray(m1[pbt.PARENT]), np.asarray(m2[pbt.PARENT])], 1)
    own = np.arange(n)[:, None]
    moved = parent != own
    assert not moved[:, [0, 2, 4]].any()  # no step at updates 1, 3, 5
    assert moved[:, 1].sum() == 1 and moved[:, 3].sum() == 1  # one of 4 replaced at 2 and 4
    # Cut as 2 + 2 + 1 the same run gives the same bits (the steps' keys are the update's).
    a, ma = run(state, hp, 2)
    b, mb = run(a, hp.replace(learning_rate=ma["pbt_learning_rate"][:, -1]), 2)
    for x, y in zip(bits(b), bits(s1), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(
        np.concatenate([ma[pbt.PARENT], mb[pbt.PARENT]], 1), np.asarray(m1[pbt.PARENT])
    )
    assert int(s2.update[0]) == 5


WORKER = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
sys.path.insert(0, "tests")
from conftest import tiny_config
from purejaxppo import pbt
from purejaxppo.ppo import HParams, make_trainer
from purejaxppo.sweep import Draw

assert jax.device_count() == 2
trainer = make_trainer(tiny_config())
n = 6
hp = jax.tree.map(lambda x: jnp.full(n, x, jnp.float32), HParams())
hp = hp.replace(learning_rate=jnp.linspace(1e-4, 1e-2, n, dtype=jnp.float32))
state = jax.vmap(trainer.init)(jax.random.split(jax.random.key(0), n), hp)
metrics = {
    "episode_return": jnp.array([[1.0], [6.0], [2.0], [5.0], [0.5], [4.0]]),
    "episodes": jnp.ones((n, 1), jnp.int32),
    "finite": jnp.ones((n, 1), jnp.int32),
}
space = (("learning_rate", Draw("loguniform", 1e-4, 1e-2)),)
opts = pbt.PBTOptions(every=1, fraction=1 / 3, space=space)
out = {}
for count in (1, 2):
    mesh = Mesh(np.array(jax.devices()[:count]), ("runs",))
    sharding = NamedSharding(mesh, PartitionSpec("runs"))
    placed = jax.device_put((state, hp, metrics), sharding)
    step = jax.jit(lambda s, h, m: pbt.pbt_step(s, h, m, n, opts, jax.random.key(5)),
                   out_shardings=sharding)
    new_state, new_hp, parent = step(*placed)
    assert len(jax.tree.leaves(new_state.params)[0].sharding.device_set) == count
    out[count] = (jax.device_get(new_state), jax.device_get(new_hp), np.asarray(parent))
one, two = out[1], out[2]
def bits(tree):
    return [np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
                       else x) for x in jax.tree.leaves(tree)]
same = all(np.array_equal(a, b) for a, b in zip(bits(one[:2]), bits(two[:2])))
# Runs 0 and 4 (the worst two) copy runs 1 and 3, which live on the other device of two.
print(json.dumps({"same": same, "parent": one[2].tolist(), "parent2": two[2].tolist()}))
"""


@pytest.mark.integration
def test_a_step_over_two_devices_copies_across_them_as_on_one():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run(
        [sys.executable, "-c", WORKER], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["same"] and out["parent"] == out["parent2"]
    parent = out["parent"]
    assert [i for i in range(6) if parent[i] != i] == [0, 4]
    assert parent[0] in (1, 3) and parent[4] in (1, 3)
