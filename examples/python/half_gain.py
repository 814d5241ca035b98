"""The opt-out rate at which half of the revenue gain of sharing remains, by root finding.

    python examples/python/half_gain.py [USERS]

The 2016 window's revenue change falls as more users opt out; scipy's Brent method finds the
target opt-out rate r at which it is half its value at r = 0. Each trial evaluates the scenario
at the rates 0 and r only, with the same seed (common random numbers).
"""

import sys

import polars as pl
from scipy.optimize import brentq

import adsim

users = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
base = adsim.Scenario.builtin("whatsapp-2016").with_(
    {"population.users": users, "population.replications": 2}
)


def gain(rate: float) -> float:
    rates = [0.0, rate] if rate > 0 else [0.0]
    summary = adsim.evaluate(base.with_({"policy.rates": rates})).summary
    row = summary.filter((pl.col("arm") == "opt_out_window") & (pl.col("rate") == rate))
    return row["market_revenue_change_musd"].item()


full = gain(0.0)
rate = brentq(lambda r: gain(r) - full / 2, 0.0, 1.0, xtol=1e-3)
print(f"revenue change at no opt-out: ${full:.1f}M over the horizon (auction prices)")
print(f"half of it remains at a target opt-out rate of {rate:.3f}")
