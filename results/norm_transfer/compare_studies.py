"""Figures and tables that compare norm-transfer studies (Filatov et al., arXiv 2510.03871) across stores.

    python results/norm_transfer/compare_studies.py --stores DIR --out results/norm_transfer

DIR holds the stores `norm_transfer` (study 1), `norm_transfer_size` (2), `norm_transfer_momentum` (3a)
and `norm_transfer_schedule` (3b), as the experiments' docstrings name them. Writes size.json and
optimal_norm_vs_size.png (study 2: the optimal output norm per model size and horizon), variants.json and
norm_transfer_variants.png (study 3: does one optimal norm still hold when the norm is no longer about
lr x steps?). Every number comes from the library's norm_transfer functions (analysis.norm_transfer), the
same the `norm_transfer` recipe uses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.fit import jsonable  # noqa: E402
from analysis.load import load_store  # noqa: E402
from analysis import recipes_norm  # noqa: E402
from analysis.norm_transfer import fit_lr_joint, optimal_norms  # noqa: E402

SEEDS = ("run.seed", "run.data_seed")
HORIZONS = (2 ** 17, 2 ** 20)  # the horizons every study was designed to share


def horizon_table(store: Path, extra: dict[str, str] | None = None) -> pd.DataFrame:
    """The norm_transfer recipe's (run, horizon) table of a store's finished runs, with the `extra` run
    columns ({column: short name}), restricted to HORIZONS."""
    runs, curves = load_store(store, write=False)
    runs = runs[runs["state"] == "done"]
    seeds = [c for c in SEEDS if c in runs.columns]
    table = recipes_norm.horizon_table(curves, runs, "val_loss", "norm/param/output", "tokens", "optim.lr",
                                       "run.batch_size", "run.schedule", seeds, 0.0, [], extra)
    return table[(table["D"] >= HORIZONS[0]) & (table["D"] <= HORIZONS[1])].reset_index(drop=True)


def optima(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return optimal_norms(table, by=by, seed_col="seed", n_boot=500, seed=0, empty="keep")


def spread(values: pd.Series) -> dict:
    v = values.to_numpy(float)
    v = v[np.isfinite(v)]
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)), "range": [float(v.min()), float(v.max())], "n": int(v.size)}


def size_study(store: Path, out: Path) -> dict:
    table = horizon_table(store, {"model.width": "width", "model.depth": "depth"})
    opt = optima(table, ["width", "depth", "D"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, depth in zip(axes, sorted(opt["depth"].unique())):
        for D, g in opt[opt["depth"] == depth].groupby("D"):
            g = g.sort_values("width")
            err = [g["log2_norm_opt"] - g["log2_norm_lo"], g["log2_norm_hi"] - g["log2_norm_opt"]]
            ax.errorbar(np.log2(g["width"]), g["log2_norm_opt"], yerr=np.abs(np.asarray(err, float)), marker="o",
                        capsize=3, label=f"D = 2^{np.log2(D):.0f}")
        ax.set(title=f"depth {depth}", xlabel="log2 width", xticks=np.log2(sorted(opt["width"].unique())))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("optimal log2 ||W_out||_{RMS->inf}")
    axes[0].legend()
    fig.suptitle("Study 2: optimal output norm per model size (B = 16)")
    fig.tight_layout()
    fig.savefig(out / "optimal_norm_vs_size.png", dpi=120)
    plt.close(fig)
    ok = opt[opt["ok"]]
    result = {"optima": opt, "per_horizon_spread_across_sizes": {
        f"2^{np.log2(D):.0f}": spread(g["log2_norm_opt"]) for D, g in ok.groupby("D")},
        "log2_lr_opt_spread_across_sizes": {f"2^{np.log2(D):.0f}": spread(np.log2(g["lr_opt"])) for D, g in ok.groupby("D")}}
    return result


VARIANTS = {"study 1: no momentum, constant lr": "norm_transfer",
            "study 3a: momentum (alpha = 0.1), constant lr": "norm_transfer_momentum",
            "study 3b: no momentum, cosine decay": "norm_transfer_schedule"}


BATCH_COLOURS = ("tab:purple", "tab:brown", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:pink")


def variants_study(root: Path, out: Path) -> dict:
    fig, axes = plt.subplots(1, len(VARIANTS), figsize=(15, 4.2), sharey=True)
    result = {}
    for ax, (title, name) in zip(axes, VARIANTS.items()):
        table = horizon_table(root / name)
        opt = optima(table, ["B", "D"])
        ok = opt[opt["ok"]]
        law = fit_lr_joint(opt, n_boot=500, seed=0)
        result[title] = {"optima": opt, "log2_norm_opt": spread(ok["log2_norm_opt"]),
                         "log2_lr_opt": spread(np.log2(ok["lr_opt"])), "lr_joint": law.to_dict(),
                         "n_seeds": int(table["seed"].nunique())}
        for B, g in opt.groupby("B"):
            g = g.sort_values("D")
            err = np.abs(np.asarray([g["log2_norm_opt"] - g["log2_norm_lo"], g["log2_norm_hi"] - g["log2_norm_opt"]], float))
            colour = BATCH_COLOURS[int(np.log2(B)) % len(BATCH_COLOURS)]  # one colour per B in every panel
            ax.errorbar(np.log2(g["D"]), g["log2_norm_opt"], yerr=err, marker="o", capsize=3, color=colour,
                        label=f"B = {B:g}")
            edge = g[~g["ok"]]
            ax.plot(np.log2(edge["D"]), edge["log2_norm_opt"], "o", mfc="white", color=colour)
        a, b = law.params.get("B", np.nan), law.params.get("D", np.nan)
        ax.set(title=f"{title}\nlog2 eta* = {a:.2f} log2 B {b:+.2f} log2 D", xlabel="log2 D (tokens)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("optimal log2 ||W_out||_{RMS->inf}")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle("Study 3: the optimal output norm per (B, D) with and without the norm ~ lr x steps regime "
                 "(hollow: at the edge of the lr grid)")
    fig.tight_layout()
    fig.savefig(out / "norm_transfer_variants.png", dpi=120)
    plt.close(fig)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=Path, required=True, help="directory holding the four stores")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, result in (("size", size_study(args.stores / "norm_transfer_size", args.out)),
                         ("variants", variants_study(args.stores, args.out))):
        (args.out / f"{name}.json").write_text(json.dumps(jsonable(result), indent=1) + "\n")
        print(f"wrote {args.out / (name + '.json')}")


if __name__ == "__main__":
    main()
