"""Figures: one function per figure, each returning a matplotlib Figure (no pyplot state, so they work
headless and in parallel). Axes that the field reads in powers of two (learning rate, width, batch,
norm, horizon) use log2 scales with 2^k tick labels; colours follow a sequential colormap by size.
"""

from analysis.plots.diagnostics import plot_coord_check, plot_embedding_row_norms
from analysis.plots.laws import plot_chinchilla_fit, plot_isoflop
from analysis.plots.lr import plot_bstar, plot_loss_vs_lr, plot_lr_vs_batch, plot_optimal_lr_vs_width
from analysis.plots.norm import (plot_loss_vs_norm, plot_loss_vs_norm_per_horizon, plot_norm_vs_step,
                                 plot_optimal_norm_vs_horizon)
from analysis.plots.optim import plot_optimizer_comparison
from analysis.plots.style import save_figure
from analysis.plots.training_laws import (plot_curve_collapse, plot_schedule_law, plot_shared_exponent,
                                          plot_wd_timescale)

__all__ = ["plot_bstar", "plot_chinchilla_fit", "plot_coord_check", "plot_embedding_row_norms", "plot_isoflop",
           "plot_loss_vs_lr", "plot_loss_vs_norm", "plot_lr_vs_batch", "plot_norm_vs_step",
           "plot_optimal_lr_vs_width", "plot_optimal_norm_vs_horizon", "plot_loss_vs_norm_per_horizon", "plot_optimizer_comparison", "save_figure",
           "plot_curve_collapse", "plot_schedule_law", "plot_shared_exponent", "plot_wd_timescale"]
