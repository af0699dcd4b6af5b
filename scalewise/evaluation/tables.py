"""A result table and the error for a missing result: what every table builder returns or raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class MissingResult(KeyError):
    """A table cell's source result is absent (names the metrics file, model and setting)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass
class Table:
    """One result table: ``rows`` are lists of cells (str, int, float or None)."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
