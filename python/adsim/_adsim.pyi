"""Type stubs of adsim's Rust extension (python/src/lib.rs); use the `adsim` package's API."""

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, final

__version__: str
TABLES: list[str]

class ScenarioError(ValueError):
    """A scenario, plan or argument is invalid."""

    file: str | None
    key: str
    value: str | None
    expected: str

class FolderError(ValueError):
    """A folder handed back to adsim is not one adsim wrote, or is damaged."""

class AdsimError(RuntimeError):
    """An internal failure of adsim."""

@final
class Table:
    """An adsim table, readable through the Arrow PyCapsule stream protocol."""

    @property
    def name(self) -> str: ...
    @property
    def num_rows(self) -> int: ...
    @property
    def columns(self) -> list[str]: ...
    def __len__(self) -> int: ...
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...

@final
class Scenario:
    """A scenario: the model's settings, from a built-in, a TOML file or TOML text."""

    @staticmethod
    def builtin(name: str) -> Scenario: ...
    @staticmethod
    def builtins() -> list[str]: ...
    @staticmethod
    def from_toml(path_or_text: str | os.PathLike[str]) -> Scenario: ...
    @staticmethod
    def from_file(path: str | os.PathLike[str]) -> Scenario: ...
    @staticmethod
    def from_text(text: str, base: str | os.PathLike[str] | None = None) -> Scenario: ...
    def with_(self, overrides: dict[str, Any]) -> Scenario: ...
    def get(self, key: str) -> Any: ...
    def to_toml(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def source(self) -> str: ...

Progress = Callable[[int, int], Any] | None

def evaluate(
    scenario: Scenario, *, threads: int | None = None, progress: Progress = None
) -> list[Table]: ...
def run(
    scenario: Scenario,
    out: Path,
    *,
    force: bool = False,
    threads: int | None = None,
    progress: Progress = None,
) -> list[Table]: ...
def study(
    plan: str,
    out: Path,
    *,
    force: bool = False,
    threads: int | None = None,
    progress: Progress = None,
) -> None: ...
def validate(
    *,
    users: int = 20000,
    replications: int = 5,
    seed: int = 2016,
    out: Path | None = None,
    force: bool = False,
    threads: int | None = None,
    progress: Progress = None,
) -> Table: ...
def parameters() -> Table: ...
@final
class Model:
    def __init__(
        self,
        scenario: Scenario,
        factors: Sequence[str | tuple[str, float, float]],
        outputs: Sequence[tuple[str, str, float]],
        *,
        users: int | None = None,
        replications: int | None = None,
        threads: int | None = None,
    ) -> None: ...
    @property
    def names(self) -> list[str]: ...
    @property
    def bounds(self) -> list[tuple[float, float]]: ...
    @property
    def outputs(self) -> list[str]: ...
    def evaluate(
        self, x: Sequence[Sequence[float]], *, progress: Progress = None
    ) -> list[list[float]]: ...
