"""`scaling report`: the page is one self-contained file (every image a PNG data URI, no external
reference), its fits table holds every fitted parameter, warnings are shown escaped, and bad input
gives exit status 2 with one line and writes nothing. (Rendering in a real browser: docs/report.md.)"""

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

import scaling_cli
from analysis import report
from analysis.synthetic import lr_sweep_store

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "results" / "quickstart"


class Page(HTMLParser):
    """Tags, attributes, text and tables of a page (a table: rows of cell texts)."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.tables, self.text = [], [], [], []
        self._row = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
            self.tables[-1].append(self._row)
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def images(self) -> list[bytes]:
        srcs = [v for tag, k, v in self.attrs if tag == "img" and k == "src"]
        assert all(s.startswith("data:image/png;base64,") for s in srcs), [s[:40] for s in srcs]
        return [base64.b64decode(s.split(",", 1)[1], validate=True) for s in srcs]

    def table_with(self, header: str) -> list[dict]:
        for table in self.tables:
            if table and header in table[0]:
                return [dict(zip(table[0], row)) for row in table[1:]]
        raise AssertionError(f"no table with a {header!r} column")


def assert_self_contained(text: str, page: Page) -> None:
    """No reference outside the file: only data: images and in-page #anchors, no script or stylesheet link."""
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    for tag, key, value in page.attrs:
        if key in ("src", "href", "srcset", "action", "poster", "data"):
            assert value.startswith(("data:", "#")), (tag, key, value[:80])
    assert not re.search(r"https?://", text) and "url(" not in text


def tiny_png(path: Path, color=(200, 30, 30)) -> bytes:
    Image.new("RGB", (6, 4), color).save(path)
    return path.read_bytes()


def test_page_of_the_committed_quickstart(tmp_path):
    out = tmp_path / "quickstart.html"
    assert report.main(["--results", str(QUICKSTART), "--out", str(out)]) == 0
    text = out.read_text()
    page = Page(text)
    assert_self_contained(text, page)
    pngs = sorted([*QUICKSTART.glob("*.png"), *QUICKSTART.glob("*/*.png")])
    images = page.images()
    assert sorted(images) == sorted(p.read_bytes() for p in pngs)  # every figure, byte for byte
    for data in images:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    # the fits table: one row per parameter of every law, estimate and interval as in fits.json
    fits = json.loads((QUICKSTART / "fits.json").read_text())
    rows = {r["quantity"]: r for r in page.table_with("quantity")}
    for kind, law in fits["laws"].items():
        for param, value in law["params"].items():
            row = rows[f"laws.{kind}: {param}"]
            lo, hi = law["ci"][param]
            assert row["estimate"] == f"{value:.4g}" and row["95% interval"] == f"[{lo:.4g}, {hi:.4g}]"
            assert row["n"] == str(law["n"]) and row["flags"] == ""
    optima = page.table_with("x_opt")
    assert len(optima) == len(fits["optima"]) and optima[0]["x_opt"] == f"{fits['optima'][0]['x_opt']:.4g}"
    body = " ".join(page.text)
    assert "No warnings." in body and "56 done" in body and "c24fd2b (56 runs)" in body
    assert "Quickstart: does the learning rate transfer" in body  # the title of its README


def _results_dir(tmp_path: Path, warning: str) -> tuple[Path, bytes]:
    d = tmp_path / "exp"
    d.mkdir()
    png = tiny_png(d / "fig.png")
    fit = {"name": "power_law", "params": {"a": 2.0, "b": -0.5}, "ci": {"a": [1.5, 2.5]}, "se": {}, "objective": 0.1,
           "r2": 0.99, "n": 7, "warnings": [f"fit says {warning}"], "details": {}}
    fits = {"recipe": "demo<i>", "runs": {"done": 7, "diverged": 1}, "laws": {"x": fit, "y": None},
            "optima": [{"B": 16, "x_opt": 0.01, "at_edge": True, "note": warning}],
            "figures": ["fig.png", "missing.png"], "warnings": [warning], "options": {"key<b>": warning}}
    (d / "fits.json").write_text(json.dumps(fits))
    (d / "README.md").write_text(f"# Title {warning}\n")
    (d / "bad.png").write_text("not a png")
    return d, png


def test_strings_are_escaped_and_warnings_shown(tmp_path):
    evil = '<script>alert("x")</script> & <img src=http://evil.example/x.png>'
    d, png = _results_dir(tmp_path, evil)
    out = tmp_path / "page.html"
    assert report.main(["--results", str(d), "--out", str(out)]) == 0
    text = out.read_text()
    page = Page(text)
    assert "<script>" not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp;" in text
    assert page.images() == [png] and "bad.png" not in [v for _, k, v in page.attrs if k == "alt"]
    body = " ".join(page.text)
    assert body.count(evil) >= 6  # title, both warning lists, the fit's flag, the record cell, the setting
    assert "figure missing.png listed in fits.json is missing" in body and "bad.png is not a PNG file" in body
    rows = {r["quantity"]: r for r in page.table_with("quantity")}
    assert set(rows) == {"laws.x: a", "laws.x: b", "laws.y"}
    assert rows["laws.x: a"]["95% interval"] == "[1.5, 2.5]" and rows["laws.x: b"]["flags"].endswith("no interval")
    assert rows["laws.y"]["flags"] == "not fitted"
    warnings_box = text.split('<div class="warnings">', 1)[1].split("</div>", 1)[0]
    assert "3 warning(s)" in warnings_box and "&lt;script&gt;" in warnings_box  # at the top, before any figure
    assert text.index('<div class="warnings">') < text.index("<img")
    # the fixture's evil <img src=http://...> is text, not a tag: the page stays self-contained
    assert [tag for tag in page.tags if tag == "img"] == ["img"]


def test_store_mode_analyses_then_renders(tmp_path, capsys):
    store = tmp_path / "store"
    lr_sweep_store(store, kinds=("sp",), widths=(64, 128, 256))
    out = tmp_path / "pages" / "lr.html"
    argv = ["report", "--store", str(store), "--recipe", "lr_transfer", "--set", "n_boot=30", "--out", str(out)]
    assert scaling_cli.main(argv) == 0
    text = out.read_text()
    page = Page(text)
    assert_self_contained(text, page)
    assert len(page.images()) == 2  # loss_vs_lr, optimal_lr_vs_width
    slope = float({r["quantity"]: r for r in page.table_with("quantity")}["laws.sp: b"]["estimate"])
    assert abs(slope + 1) < 0.1  # the synthetic store's SP optimum scales as 1/width
    assert not (store / "report.html").exists() and sorted(p.name for p in out.parent.iterdir()) == ["lr.html"]
    assert f"wrote {out}" in capsys.readouterr().out


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("empty", "no fits.json and no PNG figure"),
    ("bad_json", "is not readable JSON"),
    ("not_object", "not a JSON object"),
    ("out_is_dir", "is a directory"),
    ("recipe_without_store", "--recipe and --set go with --store"),
    ("store_without_experiment", "--recipe NAME is required"),
    ("empty_store", "no runs"),
])
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, capsys, case, message):
    d = tmp_path / "res"
    d.mkdir()
    out = tmp_path / "page.html"
    out.write_text("previous page")
    argv = ["report", "--results", str(d), "--out", str(out)]
    if case == "missing":
        argv[2] = str(tmp_path / "nope")
    elif case == "empty":
        (d / "sub").mkdir()
        (d / "notes.txt").write_text("no figures here")
    elif case in ("bad_json", "not_object"):
        tiny_png(d / "fig.png")
        (d / "fits.json").write_text("{oops" if case == "bad_json" else "[1, 2]")
    elif case == "out_is_dir":
        tiny_png(d / "fig.png")
        argv[-1] = str(tmp_path)
    elif case == "recipe_without_store":
        tiny_png(d / "fig.png")
        argv += ["--recipe", "lr_transfer"]
    else:
        store = tmp_path / "store"
        if case == "store_without_experiment":
            lr_sweep_store(store, kinds=("sp",), widths=(64,), log2_lrs=(-8.0, -7.0))
        else:
            store.mkdir()
        argv = ["report", "--store", str(store), "--out", str(out)]
        argv += ["--recipe", "lr_transfer"] if case == "empty_store" else []
    before = sorted(p.name for p in tmp_path.iterdir())
    assert scaling_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert out.read_text() == "previous page" and sorted(p.name for p in tmp_path.iterdir()) == before


def test_default_out_is_next_to_the_results(tmp_path):
    d = tmp_path / "quickstart"
    shutil.copytree(QUICKSTART, d, ignore=shutil.ignore_patterns("*.parquet", "coord_check", "mup_fine"))
    assert scaling_cli.main(["report", "--results", str(d)]) == 0
    page = Page((d / "report.html").read_text())
    assert len(page.images()) == 2 and "c24fd2b" not in " ".join(page.text)  # no runs.parquet: no commit line
