"""The documentation: the MkDocs site builds with --strict (a broken link or anchor, a link out of docs/ to a file
that does not exist, a page left out of the nav: each fails it), the README's links name files that exist, and the
README stays a front page whose commands are CI's own and whose tour leaves the shipped agents' files alone."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

README = (ROOT / "README.md").read_text()
LINK = re.compile(r"\]\(<?([^)\s>]+)>?\)")
try:
    import mkdocs  # noqa: F401
except ImportError:
    mkdocs = None
needs_mkdocs = pytest.mark.skipif(mkdocs is None, reason="MkDocs is not installed: pip install -r requirements-docs.txt")


def build(root, site):
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(root / "mkdocs.yml"),
                           "--site-dir", str(site)], cwd=root, capture_output=True, text=True, timeout=300)


def fenced(text, after):
    """The first ```bash block after the heading `after`, its continuation lines joined: -> list of commands."""
    start = text.index("```bash", text.index(after)) + len("```bash")
    block = text[start:text.index("```", start)].replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


@needs_mkdocs
def test_site_builds_strict(tmp_path):
    proc = build(ROOT, tmp_path / "site")
    assert proc.returncode == 0, proc.stderr[-4000:]
    site = tmp_path / "site"
    assert "A 5-minute tour on the shipped agents" in (site / "index.html").read_text(), "README.md is the home page"
    for page in ("extractor", "agents", "compare", "probe", "sweep", "external_agents", "benchmarks", "docker", "tests",
                 "FORMATS"):
        assert (site / f"{page}.html").is_file(), page
    # a link out of docs/ points at the file in the checkout
    agents = (site / "agents.html").read_text()
    target = re.search(r'href="([^"]*ppo_pixel_breakout\.py)"', agents).group(1)
    assert (site / target).resolve() == (ROOT / "ppo_pixel_breakout.py").resolve()


@needs_mkdocs
def test_strict_build_fails_on_what_rots(tmp_path):
    """A copy of the docs with one of each defect: the build fails and names every one."""
    root = tmp_path / "repo"
    root.mkdir()
    for entry in ROOT.iterdir():   # everything but docs/, README.md and mkdocs.yml is linked, not copied
        if entry.name not in ("docs", "README.md", "mkdocs.yml", ".git"):
            os.symlink(entry, root / entry.name)
    shutil.copy(ROOT / "README.md", root / "README.md")
    shutil.copy(ROOT / "mkdocs.yml", root / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", root / "docs", ignore=lambda d, names: ["results"] if d == str(ROOT / "docs") else [])
    os.symlink(ROOT / "docs" / "results", root / "docs" / "results")
    (root / "docs" / "orphan.md").write_text("# A page nobody put in the nav\n")
    with open(root / "docs" / "compare.md", "a") as f:
        f.write("\n[gone](no_such_page.md) [no section](probe.md#no-such-section) [no script](../no_such_script.py)\n")
    with open(root / "README.md", "a") as f:
        f.write("\n[missing](docs/missing_page.md)\n")
    proc = build(root, tmp_path / "site")
    assert proc.returncode != 0
    for needle in ("orphan.md", "no_such_page.md", "no-such-section", "no_such_script.py", "missing_page.md"):
        assert needle in proc.stderr, (needle, proc.stderr[-4000:])


def test_readme_links_name_existing_files():
    targets = [t for t in LINK.findall(README) if not re.match(r"^[a-z]+:", t) and not t.startswith("#")]
    assert len(targets) > 20
    missing = [t for t in targets if not (ROOT / t.partition("#")[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_readme_is_a_front_page_with_cis_commands():
    assert len(README.splitlines()) <= 250, "the README is a front page: details go to docs/"
    setup = fenced(README, "## Set up")
    ci = [re.sub(r"\s+#.*", "", line).replace("python -m pip install -q", "pip install").strip()
          for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert setup[0] == "pip install torch==2.13.0" and setup[1] == "pip install -r requirements.txt", setup
    assert ci.index(setup[0]) < ci.index(setup[1]), "the README installs as .ci/run does: torch first"
    assert "python -m pytest tests -q -n auto --dist loadfile" in setup and "python -m pytest tests -q -n auto --dist loadfile" in ci
    assert any(c.startswith("python ppo_pixel_breakout.py") for c in setup), "the main job is shown"


def test_readme_tour_writes_only_to_its_own_folder():
    tour = fenced(README, "## A 5-minute tour")
    assert len(tour) >= 3
    for command in tour:
        args = shlex.split(command)
        assert args[0] == "python" and (ROOT / args[1]).is_file(), command
        outs = [args[i + 1] for i, a in enumerate(args) if a in ("--out-dir", "--eval-out", "--runs-dir")]
        assert outs and all(o.startswith("tour/") for o in outs), f"every tour command writes under tour/: {command}"
        for i, a in enumerate(args):   # every file it reads is in the clone
            if a in ("--eval-checkpoint", "--pixel-checkpoint", "--ram-checkpoint", "--ram-vars", "--roles-from"):
                assert (ROOT / args[i + 1]).is_file(), args[i + 1]
    probe = shlex.split(next(c for c in tour if "probe_function_vectors.py" in c))
    ram_vars = json.loads((ROOT / probe[probe.index("--ram-vars") + 1]).read_text())
    described = [i for i in ram_vars["selected"] if (ram_vars["bytes"][i].get("role") or {}).get("role")]
    assert "--roles-from" in probe or len(described) == len(ram_vars["selected"]), \
        "the tour's atlas names its variables: its ram vars file describes every selected byte"
