"""`scaling report`: one self-contained HTML page of an experiment's figures, fits and warnings.

    scaling report --results DIR [--out FILE]                 an analyze output dir or a results/<name> folder
    scaling report --store DIR [--recipe NAME] [--set K=V] [--out FILE]   analyze the store first, then render

A "part" of the page is a directory holding a fits.json and/or PNG figures: DIR itself and each of its
immediate subdirectories (results/norm_transfer/ is made of such parts). Each part shows its recipe, run
counts and code commits (from runs.parquet's `_meta.git_sha`), its figures embedded as base64 data URIs,
a table of every fitted quantity with its interval (each `Fit` record found in fits.json, one row per
parameter), the recipe's record tables (optima, per-horizon rows, ...) and its settings. Warnings come
first, at the top of the page. The page has no external CSS, JS or image: it is one file to mail or
attach. Every string from the inputs is HTML-escaped.

Bad input (a missing directory, no fits.json and no figure anywhere, an unreadable fits.json) gives one
line "error: ..." and exit status 2, and nothing is written; the page itself is written atomically.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from analysis.errors import AnalysisError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_INLINE_LIST = 6  # lists longer than this are shown as "[n items]" in a cell


@dataclass
class Part:
    """One directory's results: what the page shows of it."""

    name: str
    path: Path
    fits: dict | None = None
    figures: list[tuple[str, bytes]] = field(default_factory=list)  # (file name, PNG bytes)
    commits: dict[str, int] = field(default_factory=dict)  # git sha -> runs
    n_runs: int | None = None
    notes: list[str] = field(default_factory=list)  # problems with the part's own files

    @property
    def warnings(self) -> list[str]:
        listed = (self.fits or {}).get("warnings") or []
        return [str(w) for w in listed] + self.notes


# ---------------------------------------------------------------- collecting a directory's results


def collect(directory: str | Path) -> list[Part]:
    """The parts of a results directory: itself, then its subdirectories with a fits.json or a PNG."""
    root = Path(directory)
    if not root.is_dir():
        raise AnalysisError(f"results directory {str(root)!r} does not exist")
    candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    parts = [part for part in (_part(d, "." if d == root else d.name) for d in candidates) if part is not None]
    if not parts:
        raise AnalysisError(f"{str(root)!r} has no fits.json and no PNG figure (nor has any subdirectory): "
                            "nothing to report (run `scaling analyze ... --out DIR` first)")
    return parts


def _part(directory: Path, name: str) -> Part | None:
    fits_path = directory / "fits.json"
    pngs = sorted(directory.glob("*.png"))
    if not fits_path.is_file() and not pngs:
        return None
    part = Part(name=name, path=directory)
    if fits_path.is_file():
        try:
            part.fits = json.loads(fits_path.read_text())
        except (OSError, ValueError) as e:
            raise AnalysisError(f"{str(fits_path)!r} is not readable JSON: {e}") from e
        if not isinstance(part.fits, dict):
            raise AnalysisError(f"{str(fits_path)!r} holds {type(part.fits).__name__}, not a JSON object")
    # the recipe's own figures first, in its order, then any other PNG of the directory
    listed = [str(f) for f in (part.fits or {}).get("figures") or []]
    ordered = [directory / f for f in listed if (directory / f).is_file()]
    ordered += [p for p in pngs if p not in ordered]
    part.notes += [f"figure {f} listed in fits.json is missing" for f in listed if not (directory / f).is_file()]
    for path in ordered:
        data = path.read_bytes()
        if data.startswith(PNG_SIGNATURE):
            part.figures.append((path.name, data))
        else:
            part.notes.append(f"{path.name} is not a PNG file: left out")
    _read_runs(directory / "runs.parquet", part)
    return part


def _read_runs(path: Path, part: Part) -> None:
    if not path.is_file():
        return
    import pyarrow.parquet as pq  # noqa: PLC0415 - only when a runs table is there

    try:
        table = pq.ParquetFile(path)
        part.n_runs = table.metadata.num_rows
        if "_meta.git_sha" in table.schema_arrow.names:
            shas = [str(s)[:7] if s else "unknown" for s in table.read(["_meta.git_sha"]).column(0).to_pylist()]
            part.commits = {s: shas.count(s) for s in sorted(set(shas))}
    except Exception as e:  # noqa: BLE001 - any corrupt parquet: said on the page, the rest still shown
        part.notes.append(f"runs.parquet is unreadable ({type(e).__name__}: {e})")


# ---------------------------------------------------------------- flattening fits.json


def _is_fit(value) -> bool:
    """A serialised analysis.fit.Fit (Fit.to_dict)."""
    return isinstance(value, dict) and isinstance(value.get("params"), dict) and "ci" in value and "name" in value


def _is_records(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def fit_rows(fits: dict) -> list[dict]:
    """One row per fitted parameter of every Fit record in fits.json (at any depth): quantity, law,
    estimate, interval, se, n, R^2 and flags (the fit's warnings; "not fitted" for a null sibling)."""
    rows: list[dict] = []

    def walk(value, path: list[str]):
        if _is_fit(value):
            flags = [str(w) for w in value.get("warnings") or []]
            for param, estimate in value["params"].items():
                ci = (value.get("ci") or {}).get(param)
                rows.append({"quantity": f"{'.'.join(path)}: {param}", "law": value["name"], "estimate": estimate,
                             "interval": ci if isinstance(ci, list) and len(ci) == 2 else None,
                             "se": (value.get("se") or {}).get(param), "n": value.get("n"), "r2": value.get("r2"),
                             "flags": flags + ([] if ci else ["no interval"])})
            return
        if isinstance(value, dict):
            has_fits = any(_is_fit(v) for v in value.values())
            for key, item in value.items():
                if item is None and has_fits:
                    rows.append({"quantity": ".".join(path + [key]), "law": "", "estimate": None, "interval": None,
                                 "se": None, "n": None, "r2": None, "flags": ["not fitted"]})
                else:
                    walk(item, path + [str(key)])
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, path + [str(i)])

    walk({k: v for k, v in fits.items() if k not in ("warnings", "figures")}, [])
    return rows


def record_tables(fits: dict) -> list[tuple[str, list[dict]]]:
    """(dotted path, rows) of every list of records in fits.json outside the Fit records."""
    tables: list[tuple[str, list[dict]]] = []

    def walk(value, path: list[str]):
        if _is_fit(value):
            return
        if _is_records(value):
            tables.append((".".join(path), value))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, path + [str(key)])

    walk(fits, [])
    return tables


def settings(fits: dict) -> list[tuple[str, object]]:
    """(dotted key, value) of what fits.json holds besides Fit records, record tables, figures and warnings."""
    out: list[tuple[str, object]] = []

    def walk(value, path: list[str]):
        if _is_fit(value) or _is_records(value):
            return
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(item, path + [str(key)])
        else:
            out.append((".".join(path), value))

    walk({k: v for k, v in fits.items() if k not in ("warnings", "figures")}, [])
    return out


# ---------------------------------------------------------------- rendering


def fmt(value) -> str:
    """A cell's text (not yet escaped): floats to 4 significant digits, null as an em dash."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, list):
        if len(value) > _INLINE_LIST or any(isinstance(v, (dict, list)) for v in value):
            return f"[{len(value)} items]"
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def _e(value) -> str:
    return html.escape(value if isinstance(value, str) else fmt(value), quote=True)


def _flagged(row: dict) -> bool:
    """A record the reader should look at: an optimum at the grid edge, or marked not ok."""
    return row.get("ok") is False or row.get("at_edge") is True or bool(row.get("flags"))


def _table(columns: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for i, cells in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _fits_table(rows: list[dict]) -> str:
    if not rows:
        return "<p class=\"muted\">No fitted law in fits.json (the recipe's record tables are below).</p>"
    cells = [[_e(r["quantity"]), _e(r["law"]), _e(r["estimate"]),
              _e(f"[{fmt(r['interval'][0])}, {fmt(r['interval'][1])}]" if r["interval"] else None),
              _e(r["se"]), _e(r["n"]), _e(r["r2"]), "<br>".join(_e(f) for f in r["flags"])] for r in rows]
    return _table(["quantity", "law", "estimate", "95% interval", "se", "n", "R\u00b2", "flags"], cells,
                  ["flag" if r["flags"] else "" for r in rows])


def _record_table(name: str, rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_e(r.get(c)) for c in columns] for r in rows]
    n_flagged = sum(_flagged(r) for r in rows)
    flagged = f", {n_flagged} flagged (at the grid edge or not ok)" if n_flagged else ""
    return (f"<details{' open' if len(rows) <= 12 else ''}><summary><code>{_e(name)}</code>: {len(rows)} rows"
            f"{_e(flagged)}</summary>{_table(columns, cells, ['flag' if _flagged(r) else '' for r in rows])}</details>")


def _figure(name: str, data: bytes) -> str:
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<figure><img src="{uri}" alt="{_e(name)}"><figcaption>{_e(name)}</figcaption></figure>'


def _anchor(part: Part) -> str:
    return "part-" + "".join(c if c.isalnum() else "-" for c in ("top" if part.name == "." else part.name))


def _part_html(part: Part, title: str) -> str:
    fits = part.fits or {}
    meta = []
    if fits.get("recipe"):
        meta.append(("recipe", fits["recipe"]))
    if fits.get("experiment"):
        meta.append(("experiment", fits["experiment"]))
    if isinstance(fits.get("runs"), dict):
        meta.append(("runs", ", ".join(f"{n} {state}" for state, n in fits["runs"].items())))
    elif part.n_runs is not None:
        meta.append(("runs", f"{part.n_runs} in runs.parquet"))
    if part.commits:
        meta.append(("commit", ", ".join(f"{sha} ({n} runs)" for sha, n in part.commits.items())))
    if fits.get("stores"):
        meta.append(("store", ", ".join(map(str, fits["stores"]))))
    out = [f'<section id="{_anchor(part)}"><h2>{_e(title)}</h2>']
    if meta:
        out.append("<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta) + "</dl>")
    if part.warnings:
        out.append('<div class="warnings"><strong>' + _e(f"{len(part.warnings)} warning(s)") + "</strong><ul>"
                   + "".join(f"<li>{_e(w)}</li>" for w in part.warnings) + "</ul></div>")
    if part.figures:
        out.append('<div class="figures">' + "".join(_figure(n, d) for n, d in part.figures) + "</div>")
    if part.fits is not None:
        out.append("<h3>Fits</h3>" + _fits_table(fit_rows(fits)))
        tables = record_tables(fits)
        if tables:
            out.append("<h3>Tables</h3>" + "".join(_record_table(n, r) for n, r in tables))
        kv = settings(fits)
        if kv:
            out.append("<h3>Settings</h3>" + _table(["key", "value"], [[_e(k), _e(v)] for k, v in kv]))
    else:
        out.append('<p class="muted">No fits.json here: figures only.</p>')
    return "".join(out) + "</section>"


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1b1b1b}
body{margin:0 auto;max-width:1180px;padding:16px 24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
h3{font-size:15px;margin:18px 0 6px}code{font-family:ui-monospace,monospace;font-size:12px}
.muted{color:#666}dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:8px 0}
dt{color:#555}dd{margin:0}
.warnings{background:#fff4e0;border:1px solid #e0a030;border-left:6px solid #e08000;padding:8px 12px;margin:10px 0}
.warnings ul{margin:4px 0 0;padding-left:20px}.ok{background:#eef7ee;border:1px solid #8c8;padding:6px 12px}
.figures{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;flex:1 1 520px;max-width:100%}
figure img{display:block;margin:0 auto;width:auto;height:auto;max-width:100%;max-height:560px;border:1px solid #ddd}
figcaption{font-size:12px;color:#555;text-align:center}
table{border-collapse:collapse;font-size:12px;margin:4px 0 10px;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:2px 6px;text-align:left;white-space:nowrap}th{background:#f2f2f2}
tr.flag td{background:#fff4e0}details{margin:6px 0}summary{cursor:pointer}nav a{margin-right:12px}
"""


def render(parts: list[Part], name: str, title: str | None = None, source: str = "") -> str:
    """The page: a header with every warning of every part, then one section per part."""
    titled = {p.name: (name if p.name == "." else f"{name} / {p.name}") for p in parts}
    all_warnings = [(titled[p.name], w) for p in parts for w in p.warnings]
    head = [f"<h1>{_e(title or name)}</h1>"]
    counts = f"{len(parts)} part(s), {sum(len(p.figures) for p in parts)} figure(s)"
    head.append(f'<p class="muted">{_e(f"scaling report of {source}: {counts}" if source else counts)}</p>')
    if all_warnings:
        head.append('<div class="warnings"><strong>' + _e(f"{len(all_warnings)} warning(s)") + "</strong><ul>"
                    + "".join(f"<li><code>{_e(where)}</code>: {_e(w)}</li>" for where, w in all_warnings)
                    + "</ul></div>")
    else:
        head.append('<p class="ok">No warnings.</p>')
    if len(parts) > 1:
        head.append("<nav>" + "".join(f'<a href="#{_anchor(p)}">{_e(titled[p.name])}</a>' for p in parts) + "</nav>")
    body = "".join(head) + "".join(_part_html(p, titled[p.name]) for p in parts)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title or name)}</title>'
            f"<style>{_CSS}</style></head><body>{body}</body></html>\n")


def readme_title(directory: Path) -> str | None:
    """The first Markdown heading of DIR/README.md (a results/<name> folder's claim), if any."""
    readme = directory / "README.md"
    if not readme.is_file():
        return None
    for line in readme.read_text(errors="replace").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return None


def report(directory: str | Path, out: str | Path, name: str | None = None, source: str | None = None) -> Path:
    """Render the page of a results directory into OUT (written atomically); returns OUT."""
    root = Path(directory)
    parts = collect(root)
    page = render(parts, name or root.resolve().name, readme_title(root), source=source or str(directory))
    return _write(page, Path(out))


def _write(page: str, out: Path) -> Path:
    if out.is_dir():
        raise AnalysisError(f"--out {str(out)!r} is a directory: give a file name, e.g. {out / 'report.html'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, out)
    return out


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--results", metavar="DIR", help="an analyze output directory or a results/<name> folder")
    source.add_argument("--store", action="append", metavar="DIR",
                        help="run store to analyse first (repeat to combine stores)")
    parser.add_argument("--recipe", metavar="NAME", default=None,
                        help="with --store: what `scaling analyze` takes as EXPERIMENT (a recipe, an experiment "
                             ".py file, or an experiment recorded in the store; default: the store's only one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="options",
                        help="with --store: recipe option override, as for `scaling analyze`")
    parser.add_argument("--out", metavar="FILE", default=None,
                        help="the page to write (default: DIR/report.html with --results, report.html with --store)")
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        if args.results is not None:
            if args.recipe is not None or args.options:
                raise AnalysisError("--recipe and --set go with --store (--results renders what is already there)")
            out = report(args.results, args.out or Path(args.results) / "report.html")
        else:
            code, out = _report_store(args)
            if code != 0:
                return code
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


def _report_store(args: argparse.Namespace) -> tuple[int, Path | None]:
    from analysis import cli  # noqa: PLC0415 - the analyze command, only when a store is analysed here

    from analysis.load import experiments  # noqa: PLC0415

    experiment = args.recipe
    if experiment is None:
        recorded = sorted({e for s in args.store for e in experiments(s)})
        if len(recorded) != 1:
            found = f"{len(recorded)} experiments ({', '.join(recorded)})" if recorded else "no experiment"
            raise AnalysisError(f"--recipe NAME is required: the store records {found}, not exactly one")
        experiment = recorded[0]
    with tempfile.TemporaryDirectory(prefix="scaling-report-") as stage:
        argv = [experiment, *(a for s in args.store for a in ("--store", s)), "--out", stage]
        code = cli.main(argv + [a for o in args.options for a in ("--set", o)])
        if code != 0:
            return code, None
        name = Path(experiment).stem if experiment.endswith(".py") else experiment
        source = f"{', '.join(args.store)} (analysed with {experiment})"
        return 0, report(stage, args.out or "report.html", name=name, source=source)


def add_subcommands(subparsers) -> None:
    """Add `report` to the `scaling` command (called by the composition root, scaling_cli)."""
    p = subparsers.add_parser("report", description=__doc__.split("\n")[0],
                              help="one self-contained HTML page of an experiment's figures, fits and warnings")
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="scaling report", description=__doc__.split("\n")[0]))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
