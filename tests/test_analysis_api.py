"""The public surface of `analysis`: every name the package docstring and README.md list is importable where
they say; errors name the function the user called; `analyze --help` lists every recipe's options."""

import argparse
import importlib
import inspect
import json
import re
from pathlib import Path

import pandas as pd
import pytest

import analysis
from analysis.errors import AnalysisError

ROOT = Path(__file__).resolve().parents[1]
ENTRY = re.compile(r"^(?P<label>[^()\n]+?) \((?P<module>analysis(?:\.\w+)*)\)\s+(?P<names>.*)$")


def docstring_entries() -> list[tuple[str, str]]:
    """(module, name) for every name listed after "(analysis.<module>)" in the package docstring,
    continuation lines (indented, no module) included; parenthesised remarks are not names."""
    out, module = [], None
    for line in analysis.__doc__.splitlines():
        m = ENTRY.match(line)
        if m:
            module, text = m["module"], m["names"]
        elif module and line.startswith(" ") and line.strip():
            text = line
        else:
            module = None
            continue
        text = re.sub(r"\([^)]*\)", "", text)
        out += [(module, t.strip()) for t in text.split(",") if t.strip()]
    return out


def test_the_docstring_lists_names_in_a_form_the_test_reads():
    entries = docstring_entries()
    assert len(entries) >= 30
    bad = [name for _, name in entries if not re.fullmatch(r"[A-Za-z_]\w*", name)]
    assert not bad, f"docstring entries that are not plain names: {bad}"


def test_every_name_in_the_package_docstring_is_exported_from_analysis():
    missing = []
    for module, name in docstring_entries():
        mod = importlib.import_module(module)
        assert hasattr(mod, name), f"{module} has no {name} (the docstring lists it there)"
        if name not in analysis.__all__:
            missing.append(name)
            continue
        assert getattr(analysis, name) is getattr(mod, name), name
    assert not missing, f"listed in the docstring but not importable from analysis: {missing}"
    for name in ("snap_columns", "fit_data_scaling", "b_simple", "fit_bstar", "fit_lr_joint", "fit_first_band"):
        exec(f"from analysis import {name}", {})  # the names the issue found missing


def _resolve(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_every_analysis_name_in_the_readme_resolves():
    text = (ROOT / "README.md").read_text()
    names = sorted(set(re.findall(r"`(analysis(?:\.[A-Za-z_]\w*)+)", text)))
    assert len(names) >= 20
    unresolved = []
    for dotted in names:
        try:
            _resolve(dotted)
        except (ImportError, AttributeError):
            unresolved.append(dotted)
    assert not unresolved, f"README names that do not import: {unresolved}"


@pytest.mark.parametrize("call, name", [
    (lambda: analysis.fit_approach2(pd.DataFrame({"N": [1e6, 2e6, 4e6], "loss": [3.0, 2.9, 3.1]})), "fit_approach2"),
    (lambda: analysis.fit_steplaw(pd.DataFrame({"lr": ["x"] * 3, "batch_tokens": [1.0] * 3, "N": [1.0] * 3,
                                                "D": [1.0] * 3, "loss": [1.0] * 3})), "fit_steplaw"),
    (lambda: analysis.optimizer_speedup(pd.DataFrame({"optimizer": ["adamw"] * 2 + ["muon"], "k": [1.0, 2, 1],
                                                      "loss": [3.0, 2.9, 2.95]}), n_boot=0), "optimizer_speedup"),
    (lambda: analysis.fit_bstar(pd.DataFrame({"D": [1.0, 2, 4], "B_opt": [1.0, 2, 0]})), "fit_bstar"),
    (lambda: analysis.fit_lr_joint(pd.DataFrame({"lr_opt": [1.0] * 4, "B": [1.0, 2, 4, 8]})), "fit_lr_joint"),
    (lambda: analysis.fit_approach1(pd.DataFrame({"run_id": ["a"], "N": [1.0], "tokens": [1.0]})), "fit_approach1"),
    (lambda: analysis.fit_first_band(pd.DataFrame({"B": [1.0, 2, 4, 8], "D_first": [1.0, 2, 3, 4]})),
     "fit_first_band"),
])
def test_errors_name_the_function_the_user_called(call, name):
    with pytest.raises(AnalysisError) as info:
        call()
    assert str(info.value).startswith(f"{name}"), str(info.value)
    assert not re.match(r"(isoflop_optima|fit_log_linear|fit_power_law|fit_data_scaling|snap_columns|frontier|"
                        r"find_optima)\b", str(info.value))


def test_the_missing_compute_column_is_reported_under_fit_approach2():
    df = pd.DataFrame({"N": [1e6, 2e6, 4e6], "loss": [3.0, 2.9, 3.1]})
    with pytest.raises(AnalysisError, match=r"^fit_approach2: missing column 'C'"):
        analysis.fit_approach2(df)
    with pytest.raises(AnalysisError, match=r"^isoflop_optima: missing column 'C'"):
        analysis.isoflop_optima(df)  # called directly, it names itself


def _help_text() -> str:
    from analysis import cli

    sub = argparse.ArgumentParser(prog="scaling").add_subparsers()
    cli.add_subcommands(sub)
    return sub.choices["analyze"].format_help()


def test_analyze_help_lists_every_recipe_option_with_its_default():
    from analysis.recipes import RECIPES

    text = " ".join(_help_text().split())
    for name, fn in RECIPES.items():
        shown = []
        for p in inspect.signature(fn).parameters.values():
            if p.name in ("runs", "curves", "out_dir") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.default is p.empty:
                shown.append(f"{p.name}=(required)")
                continue
            try:
                shown.append(f"{p.name}=" + json.dumps(p.default, separators=(",", ":")))
            except (TypeError, ValueError):
                shown.append(f"{p.name}={p.default!r}")
        block = text[text.index(f" {name}:"):]
        assert " ".join(shown) in block, f"{name}: options {shown} not listed in order in --help"
    assert "target=(required)" in text and "b0=256.0" in text and 'baseline="adamw"' in text
