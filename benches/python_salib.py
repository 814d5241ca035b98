"""SALib's Sobol analysis through adsim.Model against the same evaluations as a loop of
`adsim run` processes (issue: the Python package). Prints evaluations per second of each.

    python3 benches/python_salib.py [BASE_POINTS] [USERS] [LOOP_RUNS]

Both evaluate the same rows of the same Saltelli sample at USERS x 1 replication; the loop
writes each row's scenario file and runs the command line on it (what a SALib analysis around
adsim had to do before the package), on LOOP_RUNS of the rows.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from SALib import ProblemSpec

import adsim

n, users, loop_runs = (int(a) for a in (sys.argv[1:] + ["32", "20000", "20"])[:3])
binary = Path(__file__).resolve().parents[1] / "target" / "release" / "adsim"
factors = ["targeting.ctr_customer", "market.budget_ratio", "market.bidders_custom_audience"]
outputs = [("market_revenue_change_musd", "opt_out_window", 0.0)]
scenario = adsim.Scenario.builtin("whatsapp-2016").with_(
    {"population.users": users, "population.replications": 1}
)
model = adsim.Model(scenario, factors, outputs)
sp = ProblemSpec(model.problem()).sample_sobol(n, calc_second_order=False)
rows = sp.samples

start = time.perf_counter()
y = model(rows)
inside = time.perf_counter() - start
sp.set_results(y[:, 0])
sp.analyze_sobol(calc_second_order=False, seed=1)

with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    for i, row in enumerate(rows[:loop_runs]):
        overrides = {k: (int(v) if k.endswith("bidders_custom_audience") else float(v)) for k, v in zip(factors, row)}
        path = Path(tmp) / f"row{i}.toml"
        path.write_text(scenario.with_(overrides).to_toml())
        subprocess.run(
            [binary, "run", path, "--out", Path(tmp) / "out", "--force", "--quiet"], check=True
        )
    outside = time.perf_counter() - start

print(f"{len(rows)} evaluations of {users} users x 1 replication, {len(factors)} factors")
print(f"adsim.Model:            {len(rows) / inside:6.2f} evaluations/s ({inside:.1f} s)")
print(f"loop of adsim run:      {loop_runs / outside:6.2f} runs/s ({loop_runs} runs, {outside:.1f} s)")
print(f"ratio:                  {(len(rows) / inside) / (loop_runs / outside):.1f}x")
print("S1 of", outputs[0], np.round(sp.analysis["S1"], 3))
