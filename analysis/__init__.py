"""Analysis: load run stores into pandas, extract optima, fit scaling laws with intervals, draw figures.

Every fitter takes a pandas DataFrame and column names (so it works on logs from any codebase) and
returns a `Fit` (estimates, bootstrap intervals, R^2 or the objective, warnings, settings) or a table.
Malformed input raises `AnalysisError` naming the column, group or file.

Loading (analysis.load)          load_store, build_tables, write_tables, read_run
Optima (analysis.optimum)        find_optima (argmin / quadratic in log x / Akima; edge flags; intervals)
Power laws (analysis.powerlaw)   fit_power_law, fit_log_linear
Chinchilla (analysis.chinchilla) fit_chinchilla (Approach 3), compute_optimal, compute_optimal_table
IsoFLOP (analysis.isoflop)       fit_approach2, isoflop_optima, fit_approach1, frontier
lr/batch laws (analysis.hyperlaws) fit_steplaw, fit_deepseek, near_optimal, snap_columns
Norm transfer (analysis.norm_transfer) at_horizons, optimal_norms, norm_per_horizon, fit_lr_joint, fit_bstar,
                                 first_band_horizon, fit_first_band
Critical batch (analysis.critical_batch) steps_to_target, fit_critical_batch, b_simple
Speedup (analysis.speedup)       optimizer_speedup, fit_data_scaling
Figures (analysis.plots)         one function per figure
Reference data (analysis.datasets) chinchilla_points, chinchilla_reference_fit (Epoch's Chinchilla points)
Recipes and CLI                  analysis.recipes.RECIPES, analysis.cli (python -m analysis.cli)
"""

import importlib

# public name -> module; imported on first use so that `import analysis.load` (used by `scaling sweep` to
# consolidate stores) does not pull in JAX or matplotlib
_EXPORTS = {
    "AnalysisError": "errors", "LoadWarning": "errors", "Fit": "fit",
    "load_store": "load", "build_tables": "load", "write_tables": "load", "read_run": "load",
    "find_optima": "optimum", "fit_power_law": "powerlaw", "fit_log_linear": "powerlaw",
    "fit_chinchilla": "chinchilla", "compute_optimal": "chinchilla", "compute_optimal_table": "chinchilla",
    "fit_approach1": "isoflop", "fit_approach2": "isoflop", "frontier": "isoflop", "isoflop_optima": "isoflop",
    "fit_steplaw": "hyperlaws", "fit_deepseek": "hyperlaws", "near_optimal": "hyperlaws",
    "fit_critical_batch": "critical_batch", "steps_to_target": "critical_batch",
    "optimizer_speedup": "speedup",
    "chinchilla_points": "datasets", "chinchilla_reference_fit": "datasets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"analysis.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
