"""Prediction figures: the norm-guided eta*(D1) against the power law and the measured optimum; norm
trajectories extrapolated to D1; per-role lr slices and the joint heatmap of two roles' multipliers."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize

from analysis.plots.style import CMAP, fmt_num, log2_axis, new_figure

_METHOD_STYLE = {"norm_constant": ("D", "tab:red", "norm-guided, constant norm"),
                 "norm_drift": ("s", "tab:orange", "norm-guided, drifting norm"),
                 "power_law": ("^", "tab:blue", "power law of η*(D)")}


def _yerr(value: float, ci) -> list | None:
    lo, hi = ci if ci is not None else (np.nan, np.nan)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return [[max(value - lo, 0.0)], [max(hi - value, 0.0)]]


def _log2_yerr(u: float, ci) -> list | None:
    """Error bar lengths, on a linear axis of 2^u, of the interval ci given in log2 units."""
    err = _yerr(u, ci)
    return None if err is None else [[2.0**u - 2.0 ** (u - err[0][0])], [2.0 ** (u + err[1][0]) - 2.0**u]]


def _eta_panel(ax, row: pd.Series, optima: pd.DataFrame, d0: float, d1: float) -> None:
    """One batch size: eta*(D) at every horizon, the power-law line and the predictions at D1."""
    o = optima[(optima["B"] == row["B"]) & np.isfinite(optima["x_opt"].to_numpy(float))]
    used = o["D"].isin(row["horizons"])
    for mask, style in ((~used & o["ok"], dict(marker="o", mfc="white", mec="gray")),
                        (used & o["ok"], dict(marker="o", color="black")), (~o["ok"], dict(marker="x", color="gray"))):
        ax.plot(o["D"][mask], o["x_opt"][mask], ls="none", ms=5, **style)
    ax.plot([], [], "o", color="black", ms=5, label="η*(D) used (≤ D0)")
    u_meas = row["log2_eta_meas"]
    ax.errorbar([d1], [2.0**u_meas], yerr=_log2_yerr(u_meas, row["log2_eta_meas_ci"]), fmt="*", ms=14, color="gold",
                mec="black", ecolor="goldenrod", capsize=3, zorder=6,
                label="measured η*(D1)" + (f" ({row['meas_edge']} edge)" if row["meas_edge"] else ""))
    slope, u_pl = row["power_law_slope"], row["log2_eta_power_law"]
    if np.isfinite(slope) and np.isfinite(u_pl):
        d = np.geomspace(min(row["horizons"]), d1, 30)
        ax.plot(d, 2.0 ** (u_pl + slope * (np.log2(d) - np.log2(d1))), "--", color=_METHOD_STYLE["power_law"][1],
                lw=1.2)
    for i, (m, (marker, colour, label)) in enumerate(_METHOD_STYLE.items()):
        u = row[f"log2_eta_{m}"]
        if not np.isfinite(u):
            continue
        x = d1 * 2.0 ** (0.15 * (i + 1))  # side by side, right of the measured star
        ax.errorbar([x], [2.0**u], yerr=_log2_yerr(u, row[f"log2_eta_{m}_ci"]), fmt=marker, ms=7, color=colour,
                    mfc="white" if row[f"{m}_edge"] else colour, capsize=3, label=f"{label}: {row[f'err_{m}']:+.2f}")
    ax.axvline(d0, color="gray", lw=0.8, ls=":")
    log2_axis(ax, "xy")
    ax.set_xlabel("horizon D (tokens)")
    ax.set_title(f"B = {fmt_num(row['B'])}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, title="log2 pred/meas", title_fontsize=6.5)


def _trajectory_panel(ax, table: pd.DataFrame, traj: pd.DataFrame, row: pd.Series, optima: pd.DataFrame,
                      d0: float, d1: float, trajectory_octaves: float, max_lrs: int = 8) -> None:
    """One batch size: log2 norm vs tokens per lr, the line fitted up to D0 extended to D1, the targets."""
    t = traj[traj["B"] == row["B"]].sort_values("lr")
    lrs = t["lr"].to_numpy(float)
    shown = set(lrs[np.unique(np.round(np.linspace(0, len(lrs) - 1, min(max_lrs, len(lrs)))).astype(int))])
    cnorm = Normalize(np.log2(lrs).min(), np.log2(lrs).max())
    cm = matplotlib.colormaps[CMAP]
    data = table[table["B"] == row["B"]]
    x_fit = np.array([d0 / 2.0**trajectory_octaves, d1])
    for _, r in t[t["lr"].isin(shown)].iterrows():
        colour = cm(cnorm(np.log2(r["lr"])))
        g = data[data["lr"] == r["lr"]].sort_values("D")
        ax.plot(g["D"], 2.0 ** g["log2_norm"], "-", color=colour, lw=1.0, alpha=0.8)
        ax.plot(x_fit, 2.0 ** (r["intercept"] + r["slope"] * np.log2(x_fit)), "--", color=colour, lw=1.0)
    o = optima[(optima["B"] == row["B"]) & optima["norm_ok"]]
    ax.plot(o["D"], 2.0 ** o["log2_norm_opt"], "o", color="black", ms=5, label="optimal norm at D")
    for m in ("norm_constant", "norm_drift"):
        u = row[f"log2_norm_target_{m}"]
        if np.isfinite(u):
            ax.plot([d1], [2.0**u], _METHOD_STYLE[m][0], color=_METHOD_STYLE[m][1], ms=7,
                    label=f"target: {_METHOD_STYLE[m][2].split(', ')[1]}")
    ax.axvline(d0, color="gray", lw=0.8, ls=":")
    ax.axvline(d1, color="gray", lw=0.8, ls=":")
    log2_axis(ax, "xy")
    ax.set_xlim(left=d0 / 2.0 ** (trajectory_octaves + 2))
    ax.set_xlabel("tokens")
    ax.set_ylabel("output norm")
    ax.set_title(f"trajectories, B = {fmt_num(row['B'])} (dashed: fit ≤ D0 → D1)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5)


def plot_norm_guided(result: dict, table: pd.DataFrame, lr_optima: pd.DataFrame, trajectory_batch=None):
    """Per batch size (log2 axes): eta*(D) at every horizon (filled: used, x: censored), the power law
    fitted up to D0 extended to D1, the measured eta*(D1) (star) and the three predictions with their
    intervals (hollow: a bound); last panel: the trajectories of one batch size (default the middle one)."""
    per = result["per_batch"]
    fig, axes = new_figure(len(per) + 1, width=4.0, height=3.8)
    for ax, (_, row) in zip(axes[0], per.iterrows()):
        _eta_panel(ax, row, lr_optima, result["d0"], result["d1"])
    axes[0][0].set_ylabel("optimal learning rate η*")
    pick = per.iloc[len(per) // 2] if trajectory_batch is None else per[per["B"] == trajectory_batch].iloc[0]
    _trajectory_panel(axes[0][-1], table, result["trajectories"], pick, result["optima"], result["d0"], result["d1"],
                      result["settings"]["trajectory_octaves"])
    fig.suptitle(f"Norm-guided η*(D1): D0 = 2^{np.log2(result['d0']):.1f}, D1 = 2^{np.log2(result['d1']):.1f} tokens")
    return fig


def plot_norm_trajectories(result: dict, table: pd.DataFrame):
    """The trajectory panel of plot_norm_guided for every batch size."""
    per = result["per_batch"]
    fig, axes = new_figure(len(per), width=4.0, height=3.8)
    for ax, (_, row) in zip(axes[0], per.iterrows()):
        _trajectory_panel(ax, table, result["trajectories"], row, result["optima"], result["d0"], result["d1"],
                          result["settings"]["trajectory_octaves"])
    fig.suptitle("Output-norm trajectories extrapolated to D1 (colour: log2 lr)")
    return fig


def plot_role_slices(roles: pd.DataFrame, slices: pd.DataFrame, y: str = "loss", title: str = "Loss per role's lr"):
    """One line per role: the loss against its lr multiplier (log2 x) with the others at the reference,
    the fitted parabola over its window and the optimum (star, hollow at an edge) with its interval."""
    fig, axes = new_figure(1, width=6.0, height=4.2)
    ax = axes[0][0]
    palette = dict(zip(roles["role"], ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown"]))
    for _, r in roles.iterrows():
        s = slices[slices["role"] == r["role"]].sort_values("mult")
        colour = palette[r["role"]]
        ax.plot(s["mult"], s["y"], "o-", color=colour, lw=1.2, ms=4,
                label=f"{r['role']}: a = {r['curvature']:.4f}" + (" (most sensitive)" if r["most_sensitive"] else ""))
        a, b, c = r["coef"]
        lo, hi = r["window"]
        if np.isfinite(a):
            u = np.linspace(lo, hi, 50)
            ax.plot(2.0**u, a * u**2 + b * u + c, "-", color=colour, lw=0.8, alpha=0.6)
        if np.isfinite(r["log2_mult_opt"]):
            xerr = None if r["edge"] else _log2_yerr(r["log2_mult_opt"], r["log2_mult_ci"])
            ax.errorbar([r["mult_opt"]], [r["y_opt"]], xerr=xerr, fmt="*", ms=12, color=colour,
                        mfc="white" if r["edge"] else colour, mec="black", capsize=3, zorder=5)
    log2_axis(ax, "x")
    ax.set_xlabel("lr multiplier of the role (others at the reference)")
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="a: loss rise one octave from the optimum", title_fontsize=7)
    return fig


def plot_role_heatmap(grid: dict, prefix: str = "", y: str = "loss"):
    """Loss over the grid of two roles' multipliers (a role_sensitivity grid: log2 axes, cells annotated),
    the argmin (square) and the joint optimum (star, with its interval; hollow when flagged)."""
    a, b = grid["roles"]
    ca, cb = prefix + a, prefix + b
    d = grid["cells"][np.isfinite(grid["cells"]["y"].to_numpy(float))]
    pivot = d.pivot_table(index=b, columns=a, values="y", aggfunc="mean").sort_index().sort_index(axis=1)
    fig, axes = new_figure(1, width=6.0, height=4.8)
    ax = axes[0][0]
    ua, ub = np.log2(pivot.columns.to_numpy(float)), np.log2(pivot.index.to_numpy(float))
    mesh = ax.pcolormesh(_edges(ua), _edges(ub), pivot.to_numpy(), cmap=CMAP + "_r", shading="flat")
    fig.colorbar(mesh, ax=ax, label=y)
    values = pivot.to_numpy()
    light = Normalize(np.nanmin(values), np.nanmax(values))
    for i, vb in enumerate(ub):
        for j, va in enumerate(ua):
            v = values[i, j]
            if np.isfinite(v):  # dark text on the light (low-loss) end of the reversed colormap
                ax.text(va, vb, f"{v:.3f}", ha="center", va="center", fontsize=6.5,
                        color="black" if light(v) < 0.6 else "white")
    k = int(np.nanargmin(d["y"].to_numpy(float)))
    ax.plot(np.log2(d[a].iloc[k]), np.log2(d[b].iloc[k]), "s", mfc="none", mec="red", ms=16, mew=1.5, label="argmin")
    (u1, u2), (ci1, ci2) = grid["log2_mult_opt"], grid["log2_mult_ci"]
    xerr, yerr = _yerr(u1, ci1), _yerr(u2, ci2)
    ax.errorbar([u1], [u2], xerr=xerr, yerr=yerr, fmt="*", ms=16, color="gold", mec="black", ecolor="black",
                mfc="gold" if grid["ok"] else "white", capsize=3, label=f"joint optimum ({2**u1:.2f}, {2**u2:.2f})")
    ax.set_xlabel(f"log2 {ca}")
    ax.set_ylabel(f"log2 {cb}")
    ax.set_title(f"{y} over the {a} x {b} lr multipliers")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges halfway between sorted centres (half a step beyond the ends)."""
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])


__all__ = ["plot_norm_guided", "plot_norm_trajectories", "plot_role_heatmap", "plot_role_slices"]
