"""The README's Results section lists every committed experiment: for each results/<name>/ one entry
linking its README, with a one-line finding and a committed figure, and every link and image path
in the section exists (so a new experiment cannot be forgotten, nor a moved figure go unnoticed)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")  # [text](target) and ![alt](image)
MAX_FINDING = 500  # characters of an entry's text: a line of finding, not a second README


def results_section(readme: str) -> str:
    match = re.search(r"^## Results\n(.*?)(?=^## )", readme, flags=re.S | re.M)
    assert match, "README.md has no '## Results' section"
    return match.group(1)


def entries(section: str) -> list[str]:
    """The section's top-level list items, each with its indented continuation lines."""
    return [m.group(0) for m in re.finditer(r"^- .*?(?=^- |^\S|\Z)", section, flags=re.S | re.M)]


def experiments() -> list[Path]:
    return sorted(p for p in (ROOT / "results").iterdir() if p.is_dir())


def test_every_results_folder_is_an_experiment_with_a_readme():
    assert experiments(), "results/ holds no experiment"
    missing = [p.name for p in experiments() if not (p / "README.md").is_file()]
    assert not missing, f"results folders without a README.md: {missing}"


def test_every_experiment_has_one_entry_with_a_finding_and_a_figure():
    section = results_section((ROOT / "README.md").read_text())
    items = entries(section)
    for exp in experiments():
        readme = f"results/{exp.name}/README.md"
        mine = [e for e in items if any(t == readme for _, _, t in LINK.findall(e))]
        assert len(mine) == 1, f"README Results section: {len(mine)} entries link {readme} (want 1)"
        entry = mine[0]
        images = [t for bang, _, t in LINK.findall(entry) if bang]
        assert images, f"the Results entry of {exp.name} has no figure"
        for image in images:
            path = ROOT / image
            assert path.suffix == ".png" and path.resolve().is_relative_to(exp.resolve()), image
            assert path.is_file() and path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), f"{image} is not a PNG"
        finding = " ".join(LINK.sub(lambda m: "" if m.group(1) else m.group(2), entry).split()).lstrip("- —")
        assert 40 <= len(finding) <= MAX_FINDING, f"the Results entry of {exp.name}: {len(finding)} characters"
    linked = {t.split("/")[1] for e in items for _, _, t in LINK.findall(e) if t.startswith("results/")}
    assert linked <= {p.name for p in experiments()}, f"entries of experiments not in results/: {linked}"


def test_every_link_and_image_of_the_section_exists():
    section = results_section((ROOT / "README.md").read_text())
    targets = [t for _, _, t in LINK.findall(section) if not re.match(r"[a-z]+:", t)]
    assert targets
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README Results section links to missing files: {missing}"
