"""Population-based training from the command line: the lineage it records, resume bit for bit,
eval and compare on its folder, and the refusals."""

import json

import numpy as np
import pytest
from conftest import assert_same_run, cut_back

from purejaxppo import pbt

TINY = ["--env", "CartPole-v1", "--total-timesteps", str(24 * 128), "--set", "num_envs=4",
        "num_steps=32", "update_epochs=2", "num_minibatches=2", "hidden_sizes=16"]  # fmt: skip
POPULATION = ["--sweep", "learning_rate=loguniform:1e-4:1e-2", "ent_coef=0,0.01", "--samples",
              "4", "--num-seeds", "2"]  # fmt: skip


def run_main(capsys, *argv):
    from purejaxppo.cli import main

    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.integration
def test_a_pbt_run_records_its_lineage_resumes_bit_for_bit_and_evaluates(tmp_path, capsys):
    done = tmp_path / "done"
    argv = [*TINY, *POPULATION, "--pbt-every", "4", "--pbt-resample", "0", "--checkpoint-every",
            "8", "--keep", "10", "--chunk", "8"]  # fmt: skip
    code, _, err = run_main(capsys, "train", *argv, "--out", str(done))
    assert code == 0, err
    assert "population: final return IQM" in err and "best run" in err

    m = np.load(done / "metrics.npz")
    assert m["pbt_step_updates"].tolist() == [4, 8, 12, 16, 20]  # none after the last update
    assert m["pbt_fields"].tolist() == ["learning_rate", "ent_coef"]
    parent = m["pbt_lineage_parent"].reshape(8, 5)  # [run, step], runs setting-major
    values = m["pbt_lineage_hparams"].reshape(8, 5, 2)
    moved = parent != np.arange(8)[:, None]
    # fraction 0.25 of 8 runs: 2 replaced per step (no run diverges here), by a top-2 run.
    assert moved.sum(0).tolist() == [2] * 5
    record = json.loads((done / "config.json").read_text())
    initial = np.array([[s["learning_rate"], s["ent_coef"]] for s in record["grid"]["settings"]])
    before = np.repeat(initial, 2, axis=0).astype(np.float32)  # each run's values before a step
    for p in range(5):
        for r in range(8):
            if moved[r, p]:
                # A copy: the parent's values times 0.8 or 1.25 (resample 0), within limits.
                with np.errstate(invalid="ignore", divide="ignore"):
                    ratio = values[r, p] / before[parent[r, p]]
                for f, x in enumerate(ratio):
                    if before[parent[r, p], f] != 0:
                        assert min(abs(x - 0.8), abs(x - 1.25)) < 1e-5, (r, p, ratio)
                    else:
                        assert values[r, p, f] == 0
            else:
                assert np.array_equal(values[r, p], before[r])
        before = values[:, p].astype(np.float32)
    summary = json.loads((done / "summary.json").read_text())
    section = summary["pbt"]
    assert section["every"] == 4 and section["replaced_per_step"] == [2] * 5
    best = section["best"]
    assert best["final_return"] == max(x for row in summary["final_return"] for x in row if x)
    assert best["ancestry"][-1] == best["run"] and len(best["ancestry"]) == 6
    assert (done / "pbt.png").stat().st_size > 0

    # Cut back to the checkpoint at update 8 and resume: the same bits, lineage included.
    cut = tmp_path / "cut"
    cut_back(done, cut, 8)
    code, _, err = run_main(capsys, "train", "--resume", str(cut))
    assert code == 0 and "resumed from checkpoint at update 8" in err, err
    assert_same_run(done, cut)
    a = np.load(done / "metrics.npz")

    # eval lists each run's own values now; compare reads the population as one entry.
    code, out, err = run_main(capsys, "eval", str(done), "--episodes", "2")
    assert code == 0, err
    runs = json.loads(out.strip().splitlines()[-1])["runs"]
    assert [r["learning_rate"] for r in runs] == pytest.approx(
        a["pbt_learning_rate"].reshape(8, -1)[:, -1].tolist()
    )
    code, out, err = run_main(
        capsys, "compare", f"pbt={done}", f"again={cut}", "--out", str(tmp_path / "cmp")
    )
    assert code == 0, err
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [e["label"] for e in result["entries"]] == ["pbt", "again"]
    assert result["entries"][0]["runs"] == [8]
    assert result["pbt"][0]["best"] == best
    assert (tmp_path / "cmp" / "compare_schedules.png").stat().st_size > 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--pbt-fraction", "0.2"], "--pbt-fraction tune population-based training"),
        (["--pbt-every", "4"], "--pbt-every evolves the --sweep fields"),
        (["--sweep", "learning_rate=1e-3,1e-4", "--pbt-every", "4"],
         "--pbt-fraction 0.25 of a population of 2 runs replaces none; use at least 4 runs"),
        (["--sweep", "learning_rate=1e-3,1e-4", "num_envs=4,8", "--num-seeds", "2",
          "--pbt-every", "4"],
         "--sweep num_envs changes the compiled program"),
        ([*POPULATION, "--pbt-every", "24"], "--pbt-every 24 leaves no PBT step in a run of 24"),
        ([*POPULATION, "--pbt-every", "4", "--checkpoint-every", "6"],
         "--checkpoint-every 6 must be a multiple of --pbt-every 4"),
        ([*POPULATION, "--pbt-every", "4", "--pbt-perturb", "0.8,x"], "--pbt-perturb must be"),
        ([*POPULATION, "--pbt-every", "4", "--pbt-resample", "2"],
         "--pbt-resample must be a number in [0, 1]"),
        ([*POPULATION, "--pbt-every", "4", "--pbt-fraction", "0.7"],
         "--pbt-fraction must be a number in (0, 0.5]"),
        ([*POPULATION, "--pbt-every", "0"], "--pbt-every must be an integer >= 1"),
    ],
)  # fmt: skip
def test_pbt_refusals_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    code, _, err = run_main(capsys, "train", *TINY, *extra, "--out", str(out))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_resume_refuses_pbt_flags(tmp_path, capsys):
    code, _, err = run_main(capsys, "train", "--resume", str(tmp_path), "--pbt-every", "4")
    assert code == 2 and "drop --pbt-every" in err


def test_the_option_record_round_trips_through_config_json():
    from conftest import tiny_config

    from purejaxppo.ppo import HParams
    from purejaxppo.record import Options, RunRecord, Sweep
    from purejaxppo.sweep import Draw, Grid

    options = pbt.PBTOptions(
        every=2, fraction=0.5, factors=(0.9, 1.1), resample=0.1,
        space=(("learning_rate", Draw("loguniform", 1.2345678e-4, 1e-2)),),
    )  # fmt: skip
    grid = Grid(("learning_rate",), ({"learning_rate": 1e-3}, {"learning_rate": 2e-3}))
    sweep = Sweep(tiny_config(), HParams(), grid, 2, 0, options)

    raw = json.loads(json.dumps(sweep.record(1, Options())))
    assert RunRecord.from_record(raw).sweep == sweep
