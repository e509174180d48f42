"""One measured figure, its target, and how the table in RESULTS.md shows it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    name: str
    target: float | None  # None: no target, reported for comparison only
    measured: float | None  # None: not measured yet
    unit: str
    higher_is_better: bool = False
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.target is None or self.measured is None:
            return None
        if self.higher_is_better:
            return self.measured >= self.target
        return self.measured <= self.target

    def ratio(self) -> str:
        """measured / target, so <= 1 is good for costs and >= 1 for rates."""
        if self.target is None or self.measured is None or self.target == 0:
            return ""
        return f"{self.measured / self.target:.2f}"

    def row(self) -> str:
        def fmt(x: float | None) -> str:
            if x is None:
                return "not measured yet"
            return f"{x:,.3g} {self.unit}" if abs(x) < 1000 else f"{x:,.0f} {self.unit}"

        target = (
            ""
            if self.target is None
            else ("≥ " if self.higher_is_better else "≤ ") + fmt(self.target)
        )
        met = {True: "yes", False: "**no**", None: ""}[self.met]
        cells = [self.name, target, fmt(self.measured), self.ratio(), met, self.note]
        return "| " + " | ".join(cells) + " |"

    def line(self) -> str:
        value = "not measured yet" if self.measured is None else f"{self.measured:.4g} {self.unit}"
        target = "" if self.target is None else f" (target {self.target:g} {self.unit})"
        return f"{self.name}: {value}{target}"
