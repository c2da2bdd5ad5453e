"""Analysis: load run stores into pandas, extract optima, fit scaling laws with intervals, draw figures.

Every fitter takes a pandas DataFrame and column names (so it works on logs from any codebase) and
returns a `Fit` (estimates, bootstrap intervals, R^2 or the objective, warnings, settings) or a table.
Malformed input raises `AnalysisError` naming the column, group and the function the user called;
suspect input that a fit survives (pooled groups, NaN groups dropped) gives an `AnalysisWarning`.

One rule for the names: every name listed below after "(analysis.<module>)" is importable both from
its module and from `analysis` directly (`from analysis import fit_bstar`); tests/test_analysis_api.py
checks this list, and the names README.md gives, against the package.

Loading (analysis.load)          load_store, build_tables, write_tables, read_run, select_experiment
Optima (analysis.optimum)        find_optima (argmin / quadratic in log x / Akima; edge flags; intervals)
Power laws (analysis.powerlaw)   fit_power_law, fit_log_linear
Chinchilla (analysis.chinchilla) fit_chinchilla (Approach 3), compute_optimal, compute_optimal_table
IsoFLOP (analysis.isoflop)       fit_approach2, isoflop_optima, fit_approach1, frontier
lr/batch laws (analysis.hyperlaws) fit_steplaw, fit_deepseek, near_optimal, snap_columns
Norm transfer (analysis.norm_transfer) at_horizons, optimal_norms, norm_per_horizon, norm_transfer_summary,
                                 fit_lr_joint, fit_bstar, first_band_horizon, fit_first_band
Critical batch (analysis.critical_batch) steps_to_target, fit_critical_batch, b_simple
Speedup (analysis.speedup)       optimizer_speedup, fit_data_scaling
Weight-decay timescale (analysis.wd_timescale) adamw_timescale, timescale_table, fit_wd_timescale, tau_opt,
                                 lambda_opt
Schedule laws (analysis.schedule_law) fit_schedule_law, predict_schedule_law, schedule_law_curves
Shared exponent (analysis.shared_exponent) fit_shared_exponent, shared_exponent_table, predict_shared_exponent
Curve collapse (analysis.collapse) curve_collapse, fit_irreducible
Figures: analysis.plots, one function per figure
Reference data (analysis.datasets) chinchilla_points, chinchilla_reference_fit (Epoch's Chinchilla points)
Recipes and CLI: analysis.recipes.RECIPES, analysis.cli (python -m analysis.cli)
"""

import importlib

# public name -> module; imported on first use so that `import analysis.load` (used by `scaling sweep` to
# consolidate stores) does not pull in JAX or matplotlib
_EXPORTS = {
    "AnalysisError": "errors", "AnalysisWarning": "errors", "LoadWarning": "errors", "Fit": "fit",
    "load_store": "load", "build_tables": "load", "write_tables": "load", "read_run": "load",
    "select_experiment": "load",
    "find_optima": "optimum", "fit_power_law": "powerlaw", "fit_log_linear": "powerlaw",
    "fit_chinchilla": "chinchilla", "compute_optimal": "chinchilla", "compute_optimal_table": "chinchilla",
    "fit_approach1": "isoflop", "fit_approach2": "isoflop", "frontier": "isoflop", "isoflop_optima": "isoflop",
    "fit_steplaw": "hyperlaws", "fit_deepseek": "hyperlaws", "near_optimal": "hyperlaws", "snap_columns": "hyperlaws",
    "at_horizons": "norm_transfer", "optimal_norms": "norm_transfer", "norm_per_horizon": "norm_transfer",
    "norm_transfer_summary": "norm_transfer", "fit_lr_joint": "norm_transfer", "fit_bstar": "norm_transfer",
    "first_band_horizon": "norm_transfer", "fit_first_band": "norm_transfer",
    "fit_critical_batch": "critical_batch", "steps_to_target": "critical_batch", "b_simple": "critical_batch",
    "optimizer_speedup": "speedup", "fit_data_scaling": "speedup",
    "adamw_timescale": "wd_timescale", "timescale_table": "wd_timescale", "fit_wd_timescale": "wd_timescale",
    "tau_opt": "wd_timescale", "lambda_opt": "wd_timescale",
    "fit_schedule_law": "schedule_law", "predict_schedule_law": "schedule_law", "schedule_law_curves": "schedule_law",
    "fit_shared_exponent": "shared_exponent", "shared_exponent_table": "shared_exponent",
    "predict_shared_exponent": "shared_exponent",
    "curve_collapse": "collapse", "fit_irreducible": "collapse",
    "chinchilla_points": "datasets", "chinchilla_reference_fit": "datasets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"analysis.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
