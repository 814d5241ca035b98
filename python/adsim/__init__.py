"""adsim: what sharing a messenger's phone numbers with a social network does to ads.

The Python interface to adsim's Rust engine. It simulates in-process (the GIL released, the
work on adsim's own threads), returns tables as polars DataFrames (they cross through the Arrow
C stream interface, so pyarrow and DuckDB read them too), and raises Python's exceptions:

- :class:`ScenarioError` (a ``ValueError``) for a bad scenario, plan, key or argument, with
  ``file``, ``key``, ``value`` and ``expected`` attributes;
- ``FileExistsError`` for an output folder that exists (pass ``force=True``);
- ``MemoryError`` when a run would need more memory than the machine has;
- ``KeyboardInterrupt`` when Ctrl-C stops a simulation (within about a second);
- ``RuntimeError`` when used in a process forked after adsim started its threads.

>>> import adsim
>>> s = adsim.Scenario.builtin("whatsapp-2016").with_({"population.users": 2_000})
>>> e = adsim.evaluate(s, replications=1)
>>> e.summary.height > 0
True

The model is described in docs/model.md of the repository; ``adsim.parameters()`` lists every
key with its legal and plausible range and its source.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import _adsim
from ._adsim import AdsimError, FolderError, Scenario, ScenarioError, Table

__all__ = [
    "AdsimError",
    "Estimates",
    "FolderError",
    "Model",
    "Scenario",
    "ScenarioError",
    "Table",
    "TABLES",
    "evaluate",
    "parameters",
    "run",
    "study",
    "validate",
]

__version__: str = _adsim.__version__

#: The estimate tables of a run, in the order ``adsim run`` writes them.
TABLES: tuple[str, ...] = tuple(_adsim.TABLES)

Progress = Callable[[int, int], Any] | bool | None


def _frame(table: Table) -> Any:
    """A polars DataFrame of an adsim table (through the Arrow C stream interface)."""
    import polars as pl

    return pl.DataFrame(table)


def _progress(progress: Progress, unit: str) -> Callable[[int, int], Any] | None:
    """``True`` draws a tqdm bar; a callable is called with (done, total); ``None`` is silent."""
    if progress is None or progress is False:
        return None
    if progress is True:
        from tqdm.auto import tqdm

        bar: Any = None

        def update(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, unit=unit)
            bar.update(done - bar.n)
            if done >= total:
                bar.close()

        return update
    if not callable(progress):
        raise TypeError(f"progress = {progress!r}: expected None, True or a callable (done, total)")
    return progress


class Estimates(Mapping[str, Any]):
    """The estimate tables of one evaluation, as polars DataFrames.

    Attributes and keys are the table names of :data:`TABLES` (``summary``, ``segments``,
    ``countries``, ``timeline``, ``ages``, ``revenue_days``, ``market``); each holds what the
    file of that name in ``adsim run``'s folder holds, at full precision. :meth:`arrow` gives
    the table as an Arrow stream object for pyarrow or DuckDB without polars.

    >>> s = Scenario.builtin("whatsapp-2016").with_({"population.users": 2_000})
    >>> e = evaluate(s, replications=1)
    >>> sorted(e) == sorted(TABLES)
    True
    """

    def __init__(self, tables: Iterable[Table]) -> None:
        self._tables = {t.name: t for t in tables}
        self._frames: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._frames:
            self._frames[name] = _frame(self._tables[name])
        return self._frames[name]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self._tables:
            raise AttributeError(name)
        return self[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)

    def arrow(self, name: str) -> Table:
        """The table ``name`` as an object with ``__arrow_c_stream__`` (``pyarrow.table(x)``)."""
        return self._tables[name]

    def __repr__(self) -> str:
        parts = ", ".join(f"{n} ({t.num_rows} rows)" for n, t in self._tables.items())
        return f"<adsim Estimates: {parts}>"


def _sized(
    scenario: Scenario, users: int | None, replications: int | None, seed: int | None
) -> Scenario:
    overrides: dict[str, int] = {}
    if users is not None:
        overrides["population.users"] = users
    if replications is not None:
        overrides["population.replications"] = replications
    if seed is not None:
        overrides["population.seed"] = seed
    return scenario.with_(overrides) if overrides else scenario


def _scenario(scenario: Scenario | str | os.PathLike[str]) -> Scenario:
    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, os.PathLike) or str(scenario).endswith(".toml"):
        return Scenario.from_toml(scenario)
    return Scenario.builtin(str(scenario))


def evaluate(
    scenario: Scenario | str | os.PathLike[str],
    *,
    users: int | None = None,
    replications: int | None = None,
    seed: int | None = None,
    threads: int | None = None,
    progress: Progress = None,
) -> Estimates:
    """Simulates a scenario and returns its estimate tables, writing no file.

    ``scenario`` is a :class:`Scenario`, a built-in name or a TOML file; ``users``,
    ``replications`` and ``seed`` override its own. The tables equal, bit for bit, what
    ``adsim run`` computes for the same scenario, whatever ``threads`` is (all cores by
    default). ``progress`` is ``True`` (a tqdm bar) or a callable ``(users_done, users_total)``.

    >>> e = evaluate("whatsapp-2016", users=2_000, replications=1)
    >>> "revenue_change_musd" in e.summary.columns
    True
    """
    s = _sized(_scenario(scenario), users, replications, seed)
    return Estimates(
        _adsim.evaluate(s, threads=threads, progress=_progress(progress, "users"))
    )


def run(
    scenario: Scenario | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    force: bool = False,
    users: int | None = None,
    replications: int | None = None,
    seed: int | None = None,
    threads: int | None = None,
    progress: Progress = None,
) -> Estimates:
    """Runs a scenario as ``adsim run --out OUT`` does: writes the results folder (tables,
    charts, report; atomically) and returns the estimate tables.

    An existing ``out`` raises ``FileExistsError`` unless ``force`` is true.
    """
    s = _sized(_scenario(scenario), users, replications, seed)
    return Estimates(
        _adsim.run(
            s, Path(out), force=force, threads=threads, progress=_progress(progress, "users")
        )
    )


def study(
    plan: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    force: bool = False,
    threads: int | None = None,
    progress: Progress = None,
) -> Path:
    """Runs a study plan (a TOML file or a built-in name, as ``adsim study``) into ``out`` and
    returns the folder. A folder left by an interrupted study is resumed with ``force=True``.
    """
    _adsim.study(
        os.fspath(plan),
        Path(out),
        force=force,
        threads=threads,
        progress=_progress(progress, "evaluations"),
    )
    return Path(out)


def validate(
    *,
    users: int = 20_000,
    replications: int = 5,
    seed: int = 2016,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    threads: int | None = None,
    progress: Progress = None,
) -> Any:
    """Runs every validation case (``adsim validate``) and returns the outcomes as a polars
    DataFrame (case, role, published figure, model value and interval, status); writes the
    validation folder to ``out`` when given.
    """
    table = _adsim.validate(
        users=users,
        replications=replications,
        seed=seed,
        out=None if out is None else Path(out),
        force=force,
        threads=threads,
        progress=_progress(progress, "scenarios"),
    )
    return _frame(table)


def parameters() -> Any:
    """The parameter registry as a polars DataFrame: every scenario key and data column with
    its type, unit, default, legal and plausible ranges, distribution and source.

    >>> p = parameters()
    >>> p.filter(p["path"] == "targeting.m_recall")["plausible_low"].item() < 1
    True
    """
    return _frame(_adsim.parameters())


Factor = str | tuple[str, float, float]
Output = tuple[str, str, float]


class Model:
    """The model as a function from factor values to outputs, for SALib, EMA Workbench, optuna
    or scipy.

    ``factors`` are registry keys (``"targeting.m_recall"``, at the registry's plausible range)
    or ``(key, low, high)``; ``outputs`` are ``(metric, arm, rate)``: a column of the summary
    table at an arm and a rate level. Calling the model on an ``(n, k)`` array returns an
    ``(n, m)`` array; the rows are evaluated in parallel in Rust, every one with the scenario's
    seed (common random numbers, as a study does), at ``users`` x ``replications`` (the
    scenario's own by default).

    >>> s = Scenario.builtin("whatsapp-2016")
    >>> m = Model(s, ["targeting.m_recall"], [("revenue_change_musd", "opt_out_window", 0.0)],
    ...           users=2_000, replications=1)
    >>> m.problem()["names"]
    ['targeting.m_recall']
    >>> m([[0.5], [0.9]]).shape
    (2, 1)
    """

    def __init__(
        self,
        scenario: Scenario | str | os.PathLike[str],
        factors: Sequence[Factor],
        outputs: Sequence[Output],
        *,
        users: int | None = None,
        replications: int | None = None,
        threads: int | None = None,
    ) -> None:
        self._model = _adsim.Model(
            _scenario(scenario),
            list(factors),
            [(str(m), str(a), float(r)) for m, a, r in outputs],
            users=users,
            replications=replications,
            threads=threads,
        )

    @property
    def names(self) -> list[str]:
        """The factors' registry keys, in column order."""
        return list(self._model.names)

    @property
    def bounds(self) -> list[tuple[float, float]]:
        """Each factor's (low, high)."""
        return list(self._model.bounds)

    @property
    def outputs(self) -> list[str]:
        """The outputs' names, ``metric@arm@rate``, in column order."""
        return list(self._model.outputs)

    def problem(self) -> dict[str, Any]:
        """SALib's problem dict (``SALib.ProblemSpec(model.problem())``)."""
        return {
            "num_vars": len(self.names),
            "names": self.names,
            "bounds": [list(b) for b in self.bounds],
            "outputs": self.outputs,
        }

    def __call__(self, x: Any, *, progress: Progress = None) -> Any:
        """Evaluates every row of ``x`` and returns an ``(n, m)`` float array (NaN where a
        metric is undefined); a single row gives a ``(1, m)`` array."""
        import numpy as np

        rows = np.asarray(x, dtype=float)
        if rows.ndim == 1:
            rows = rows[None, :]
        if rows.ndim != 2:
            raise ValueError(f"x has shape {rows.shape}: expected (n, {len(self.names)})")
        y = self._model.evaluate(rows.tolist(), progress=_progress(progress, "evaluations"))
        return np.asarray(y, dtype=float).reshape(len(rows), len(self.outputs))

    def __repr__(self) -> str:
        return f"<adsim Model: {len(self.names)} factors -> {len(self.outputs)} outputs>"
