"""The documentation stays true to the code: the generated command reference is current, every ``TTLX_*``
variable is documented, every ``ttlx.*`` name the pages mention exists, and the site builds strictly."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
_spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "scripts" / "cli_reference.py")
cli_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli_reference)

# entry-point group names that look like module paths but are not modules
NOT_MODULES = {"ttlx.datasets"}


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def test_the_committed_command_reference_is_what_the_code_gives():
    committed = cli_reference.PAGE.read_text(encoding="utf-8")
    assert committed == cli_reference.reference_page(), (
        "docs/reference/cli.md is stale; run `python scripts/cli_reference.py` and commit it.")


def test_the_check_mode_names_a_stale_page(tmp_path, monkeypatch, capsys):
    page = tmp_path / "cli.md"
    monkeypatch.setattr(cli_reference, "PAGE", page)
    monkeypatch.setattr(cli_reference, "ROOT", tmp_path)
    page.write_text("# Command-line reference\n\nold text\n", encoding="utf-8")
    assert cli_reference.main(["--check"]) == 1
    assert capsys.readouterr().out == "cli.md is stale; run `python scripts/cli_reference.py` and commit it.\n"
    assert cli_reference.main([]) == 0 and cli_reference.main(["--check"]) == 0


def test_every_command_and_sub_command_has_its_section():
    text = cli_reference.reference_page()
    for command in ("ttlx", "ttlx train", "ttlx eval", "ttlx predict", "ttlx weights convert",
                    "ttlx analyze paired", "ttlx sweep report"):
        assert f"\n## {command}\n\n```text\nUsage: {command} " in text
    assert "\x1b[" not in text and "╭" not in text  # no colour codes, no rich boxes
    assert max(len(line) for line in text.splitlines() if not line.startswith("#")) <= cli_reference.WIDTH


def test_every_setting_is_in_the_environment_page_and_no_other_is_named():
    from ttlx.settings import SETTINGS

    table = (DOCS / "reference" / "environment.md").read_text(encoding="utf-8")
    missing = [s.name for s in SETTINGS if f"| `{s.name}` |" not in table]
    assert not missing, f"docs/reference/environment.md lacks a row for {', '.join(missing)}"
    known = {s.name for s in SETTINGS}
    for page in pages():
        unknown = set(re.findall(r"\bTTLX_[A-Z_]+[A-Z]\b", page.read_text(encoding="utf-8"))) - known
        assert not unknown, f"{page.relative_to(ROOT)} names {sorted(unknown)}, which ttlx.settings does not read"


def resolves(dotted: str) -> bool:
    """Whether ``dotted`` is a module, or a module followed by attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_python_name_the_pages_mention_exists():
    names = set()
    for page in pages():
        names |= set(re.findall(r"\bttlx(?:\.[A-Za-z_]\w*)+", page.read_text(encoding="utf-8")))
    # a trailing file suffix (ttlx.egg-info, ...) or an entry-point group is not a Python name
    missing = sorted(n for n in names - NOT_MODULES if not resolves(n))
    assert not missing, f"the documentation names Python objects that do not exist: {', '.join(missing)}"


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    built = {p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("index.html")}
    for page in DOCS.rglob("*.md"):
        rel = page.relative_to(DOCS).with_suffix("")
        expected = "index.html" if rel.as_posix() == "index" else f"{rel.as_posix()}/index.html"
        assert expected in built, f"{page.relative_to(ROOT)} was not built"


def test_the_readme_stays_a_users_page_under_10_kb():
    # guides, reference and internals belong in docs/; the README's links must point at pages that exist
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode("utf-8")) < 10_000
    links = re.findall(r"\]\(((?:docs|benchmarks)/[^)#]+)", readme)
    assert links and not [link for link in links if not (ROOT / link).exists()]
