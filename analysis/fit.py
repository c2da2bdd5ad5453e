"""`Fit`: the result every fitter returns (estimates, intervals, objective or R^2, warnings).

A fit is data: `to_dict()` gives a JSON-serialisable record (NaN/inf become null) with the settings
that produced it (objective, reduction, optimiser, starts, bootstrap size) under `details`:
every fitted quantity is reported with an interval and with the objective, reduction, delta,
optimiser, tolerances and number of starts used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class Fit:
    name: str  # e.g. "power_law", "chinchilla_approach3"
    params: dict[str, float]
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # bootstrap percentile intervals
    se: dict[str, float] = field(default_factory=dict)  # bootstrap standard errors
    objective: float | None = None  # value of the minimised objective (named in details["objective"])
    r2: float | None = None  # coefficient of determination, in the space the fit was done in
    n: int = 0  # observations used
    warnings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    samples: pd.DataFrame | None = None  # bootstrap replicates of params (not serialised)

    @property
    def ok(self) -> bool:
        return not self.warnings

    def __getitem__(self, key: str) -> float:
        return self.params[key]

    def to_dict(self) -> dict:
        return jsonable({"name": self.name, "params": self.params, "ci": self.ci, "se": self.se,
                         "objective": self.objective, "r2": self.r2, "n": self.n, "warnings": self.warnings,
                         "details": self.details})

    def summary(self) -> str:
        """One line per parameter: estimate [lo, hi]; then the warnings."""
        lines = [f"{self.name} (n={self.n}" + (f", R2={self.r2:.3f}" if self.r2 is not None else "")
                 + (f", objective={self.objective:.6g}" if self.objective is not None else "") + ")"]
        for k, v in self.params.items():
            lo, hi = self.ci.get(k, (math.nan, math.nan))
            lines.append(f"  {k:>20s} = {v:.6g}" + (f"  [{lo:.4g}, {hi:.4g}]" if np.isfinite(lo) else ""))
        lines += [f"  WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples, DataFrames and non-finite floats to plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, pd.DataFrame):
        return [jsonable(r) for r in obj.to_dict(orient="records")]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    if obj is pd.NA or obj is pd.NaT:
        return None
    if hasattr(obj, "to_dict"):
        return jsonable(obj.to_dict())
    return str(obj)
