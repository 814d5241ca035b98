"""Sobol indices of the revenue change with SALib, adsim evaluated in-process through Model.

    python examples/python/sobol.py [BASE_POINTS] [USERS]

Which of three assumptions does the auction-priced revenue change of the 2016 opt-out window
(at no opt-out and at half) depend on? Common random numbers: every row uses the scenario's seed.
"""

import sys

from SALib import ProblemSpec

import adsim

n, users = (int(a) for a in (sys.argv[1:] + ["64", "20000"])[:2])
model = adsim.Model(
    "whatsapp-2016",
    ["targeting.ctr_customer", "market.budget_ratio", "market.bidders_custom_audience"],
    [
        ("market_revenue_change_musd", "opt_out_window", 0.0),
        ("market_revenue_change_musd", "opt_out_window", 0.5),
    ],
    users=users,
    replications=1,
)
sp = ProblemSpec(model.problem())
sp.sample_sobol(n, calc_second_order=False).evaluate(model).analyze_sobol(
    calc_second_order=False, seed=1
)
print(sp)
