"""The Python package against the command line and against what a Python user expects."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import adsim

SMALL = {"population.users": 3_000, "population.replications": 2}


def small(name: str) -> adsim.Scenario:
    return adsim.Scenario.builtin(name).with_(SMALL)


@pytest.mark.parametrize("name", ["whatsapp-2016", "opt-in"])
def test_evaluate_equals_the_command_lines_files(name, tmp_path, adsim_bin):
    scenario = small(name)
    path = tmp_path / "scenario.toml"
    path.write_text(scenario.to_toml())
    out = tmp_path / "run"
    subprocess.run(
        [adsim_bin, "run", path, "--out", out, "--quiet", "--threads", "1"], check=True
    )
    estimates = adsim.evaluate(scenario, threads=2)
    # The Parquet summary holds every bit; the other tables are written as CSV with six
    # decimals, so the frames are written the same way and the texts compared.
    assert estimates.summary.equals(pl.read_parquet(out / "summary.parquet"))
    for table in adsim.TABLES:
        ours = estimates[table].write_csv(float_precision=6)
        assert ours == (out / f"{table}.csv").read_text(), table


def test_thread_counts_give_the_same_tables():
    scenario = small("whatsapp-2016")
    one = adsim.evaluate(scenario, threads=1)
    two = adsim.evaluate(scenario, threads=2)
    for table in adsim.TABLES:
        assert one[table].equals(two[table]), table


def registry_rows():
    p = adsim.parameters()
    rows = p.filter(
        pl.col("per_row").is_null()
        & ~pl.col("path").str.contains(r"\[\]", literal=False)
        & pl.col("type").is_in(["float", "integer", "string", "enum", "list<float>"])
    )
    return rows.to_dicts()


def another_value(row, current):
    """A legal value of the key other than its current one, where the registry gives one."""
    kind = row["type"]
    if kind == "float":
        lo, hi = row["plausible_low"], row["plausible_high"]
        if lo is None:
            lo, hi = row["legal_low"], row["legal_high"]
        if lo is None or hi is None:
            return current
        return (lo + hi) / 2 if (lo + hi) / 2 != current else lo
    if kind == "integer":
        return current
    if kind == "string":
        return f"{current}-changed" if row["path"] in ("name", "description") else current
    return current


@pytest.mark.parametrize("row", registry_rows(), ids=lambda r: r["path"])
def test_every_override_key_round_trips(row):
    base = adsim.Scenario.builtin("whatsapp-2016")
    key = row["path"]
    current = base.get(key)
    if current is None and row["type"] == "integer":
        current = int(row["legal_low"])
    if current is None:
        pytest.skip(f"{key} is unset in the built-in scenario (an optional word)")
    value = another_value(row, current)
    try:
        changed = base.with_({key: value})
    except adsim.ScenarioError as e:
        # A value refused by a rule that binds it to other keys (shares that sum to 1): the
        # key itself must not be the one named; it round-trips at its current value.
        assert e.key != key, e
        value = current
        changed = base.with_({key: value})
    assert changed.get(key) == value
    # The TOML text reads back to the same scenario (but for the engine's tuning, which never
    # changes results and is left out of it).
    if not key.startswith("engine."):
        back = adsim.Scenario.from_toml(changed.to_toml())
        assert back == changed
        assert back.get(key) == value
    if value != current:
        assert changed != base


def test_float_keys_take_integers_and_numpy_scalars():
    s = adsim.Scenario.builtin("whatsapp-2016")
    assert s.with_({"targeting.m_recall": 1}).get("targeting.m_recall") == 1.0
    assert s.with_({"targeting.m_recall": np.float64(0.25)}).get("targeting.m_recall") == 0.25
    assert s.with_({"population.users": np.int64(500)}).get("population.users") == 500


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"targeting.no_such_key": 1.0}, "targeting.no_such_key"),
        ({"countries.recycled_rate": 1.0}, "countries.recycled_rate"),
        ({"targeting.m_recall": "high"}, "targeting.m_recall"),
        ({"targeting.m_recall": 1.5}, "targeting.m_recall"),
        ({"population.users": 0}, "population.users"),
        ({"population.users": 2.5}, "population.users"),
        ({"policy.mode": "sometimes"}, "policy.mode"),
        ({"targeting.m_recall": object()}, "targeting.m_recall"),
    ],
)
def test_bad_keys_types_and_ranges_name_the_key(overrides, key):
    with pytest.raises(adsim.ScenarioError) as info:
        adsim.Scenario.builtin("whatsapp-2016").with_(overrides)
    assert isinstance(info.value, ValueError)
    assert info.value.key == key or key in info.value.key
    assert key in str(info.value)
    assert info.value.expected


def test_scenario_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\n[population]\nusers = -4\n')
    with pytest.raises(adsim.ScenarioError) as info:
        adsim.Scenario.from_toml(path)
    assert str(path) in info.value.file
    assert info.value.key == "population.users"
    with pytest.raises(adsim.ScenarioError):
        adsim.Scenario.builtin("no-such-scenario")
    with pytest.raises(OSError):
        adsim.Scenario.from_toml(tmp_path / "missing.toml")


def test_arrow_consumers_read_the_tables():
    e = adsim.evaluate(small("whatsapp-2016"))
    for name in adsim.TABLES:
        t = e.arrow(name)
        frame = pl.DataFrame(t)
        arrow = pa.table(t)
        assert arrow.num_rows == frame.height == t.num_rows
        assert arrow.column_names == frame.columns == t.columns
        assert pl.from_arrow(arrow).equals(frame)
        counted = duckdb.sql("select count(*) from t").fetchall()[0][0]
        assert counted == frame.height
    t = e.arrow("summary")
    revenue = duckdb.sql(
        "select revenue_change_musd from t where arm = 'opt_out_window' and rate = 0"
    )
    assert math.isclose(
        revenue.fetchall()[0][0],
        e.summary.filter((pl.col("arm") == "opt_out_window") & (pl.col("rate") == 0))[
            "revenue_change_musd"
        ].item(),
    )


def test_run_writes_the_folder_and_refuses_an_existing_one(tmp_path):
    out = tmp_path / "run"
    e = adsim.run(small("whatsapp-2016"), out)
    assert (out / "report.html").exists()
    assert e.summary.equals(pl.read_parquet(out / "summary.parquet"))
    with pytest.raises(FileExistsError) as info:
        adsim.run(small("whatsapp-2016"), out)
    assert info.value.filename == str(out)
    adsim.run(small("whatsapp-2016"), out, force=True)


def test_the_memory_guard_raises_memory_error():
    # 2,000 threads, each with its own counts of 101 rate levels per arm: far beyond the
    # machine, refused before any thread starts.
    scenario = adsim.Scenario.builtin("whatsapp-2016").with_(
        {"population.users": 1_000_000_000, "population.replications": 1}
    )
    with pytest.raises(MemoryError):
        adsim.evaluate(scenario, threads=100_000)


def test_threads_must_be_positive():
    with pytest.raises(adsim.ScenarioError) as info:
        adsim.evaluate(small("whatsapp-2016"), threads=0)
    assert info.value.key == "threads"


def test_progress_reaches_the_total():
    calls = []
    adsim.evaluate(small("whatsapp-2016"), progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (6_000, 6_000)
    assert all(d <= t for d, t in calls)


def test_ctrl_c_cancels_an_evaluation_and_the_next_one_runs(tmp_path):
    big = adsim.Scenario.builtin("whatsapp-2016").with_(
        {"population.users": 20_000_000, "population.replications": 3}
    )
    timer = threading.Timer(0.5, lambda: signal.raise_signal(signal.SIGINT))
    start = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        adsim.run(big, tmp_path / "cancelled")
    stopped = time.monotonic() - start
    # The whole run takes minutes; the cancellation lands within a chunk per thread.
    assert stopped < 30, stopped
    assert not (tmp_path / "cancelled").exists()
    assert not list(tmp_path.iterdir()), list(tmp_path.iterdir())
    # The request is withdrawn: the next evaluation runs to the end.
    assert adsim.evaluate(small("whatsapp-2016")).summary.height > 0


def test_an_exception_in_the_progress_callback_cancels_and_is_raised():
    def fail(done, total):
        raise RuntimeError("stop here")

    big = adsim.Scenario.builtin("whatsapp-2016").with_(
        {"population.users": 20_000_000, "population.replications": 3}
    )
    with pytest.raises(RuntimeError, match="stop here"):
        adsim.evaluate(big, progress=fail)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_gets_an_error_not_a_hang():
    script = textwrap.dedent(
        """
        import os, sys, warnings
        warnings.simplefilter("ignore")
        import adsim
        s = adsim.Scenario.builtin("whatsapp-2016").with_({"population.users": 1000, "population.replications": 1})
        adsim.evaluate(s)
        pid = os.fork()
        if pid == 0:
            try:
                adsim.evaluate(s)
            except RuntimeError as e:
                os._exit(7 if "spawn" in str(e) else 8)
            os._exit(9)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    r = subprocess.run([sys.executable, "-c", script], timeout=120)
    assert r.returncode == 7


def test_model_matches_the_evaluation_path_and_salib_runs_it():
    from SALib import ProblemSpec

    scenario = small("whatsapp-2016")
    outputs = [
        ("market_revenue_change_musd", "opt_out_window", 0.0),
        ("revenue_change_musd", "opt_out_window", 0.5),
    ]
    model = adsim.Model(scenario, ["targeting.ctr_customer", ("market.margin", 0.1, 0.4)], outputs)
    p = adsim.parameters().filter(pl.col("path") == "targeting.ctr_customer")
    assert model.bounds[0] == (p["plausible_low"].item(), p["plausible_high"].item())
    assert model.bounds[1] == (0.1, 0.4)
    lo, hi = model.bounds[0]
    x = np.array([[lo, 0.2], [hi, 0.3]])
    y = model(x, progress=None)
    assert y.shape == (2, 2)
    # Row 0 is the scenario at those values, evaluated as evaluate() does.
    direct = adsim.evaluate(
        scenario.with_({"targeting.ctr_customer": lo, "market.margin": 0.2})
    ).summary
    for j, (metric, arm, rate) in enumerate(outputs):
        row = direct.filter((pl.col("arm") == arm) & (pl.col("rate") == rate))
        assert y[0, j] == row[metric].item()
    # Common random numbers and no state between calls: the same rows, the same outputs.
    assert np.array_equal(model(x[::-1]), y[::-1])

    sp = ProblemSpec(model.problem())
    sp.sample_sobol(8, calc_second_order=False).evaluate(model).analyze_sobol(
        calc_second_order=False, num_resamples=20, seed=1
    )
    assert sp.results.shape == (8 * (2 + 2), 2)
    s1 = sp.analysis["market_revenue_change_musd@opt_out_window@0"]["S1"]
    assert len(s1) == 2 and np.all(np.isfinite(s1))
    # The outputs move with the factors (the model is not a constant).
    assert np.ptp(sp.results[:, 0]) > 0


def test_model_refuses_what_it_cannot_evaluate():
    s = small("whatsapp-2016")
    out = [("revenue_change_musd", "opt_out_window", 0.0)]
    with pytest.raises(adsim.ScenarioError, match="plausible"):
        adsim.Model(s, ["population.seed"], out)
    with pytest.raises(adsim.ScenarioError):
        adsim.Model(s, [("targeting.m_recall", 0.2, 7.0)], out)
    with pytest.raises(adsim.ScenarioError):
        adsim.Model(s, ["targeting.m_recall"], [("no_such_metric", "opt_out_window", 0.0)])
    model = adsim.Model(s, ["targeting.m_recall"], out)
    with pytest.raises(adsim.ScenarioError, match="1 values"):
        model([[0.5, 0.5]])


def test_study_and_validate_write_their_folders(tmp_path, root):
    plan = tmp_path / "plan.toml"
    plan.write_text(
        textwrap.dedent(
            """
            name = "tiny"
            scenario = "whatsapp-2016"
            users = 1000
            replications = 1
            design = "grid"
            [[factor]]
            key = "targeting.m_recall"
            levels = [0.4, 0.8]
            """
        )
    )
    out = adsim.study(plan, tmp_path / "study")
    assert (out / "evaluations.csv").exists()
    with pytest.raises(FileExistsError):
        adsim.study(plan, tmp_path / "study")
    v = adsim.validate(users=1000, replications=1, out=tmp_path / "validation")
    assert {"case", "status", "model"} <= set(v.columns)
    assert (tmp_path / "validation" / "validation.csv").exists()
