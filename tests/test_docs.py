"""The front door and the manual: the README's size and links, the executed notebook, and the documentation
site built strictly, its generated reference complete (every command option, config key and public name)."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

import geoseg
from geoseg.cli import cli
from geoseg.training.config import KEY_DOCS, RunConfig

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_the_readme_is_a_front_door_whose_links_and_picture_exist():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert "docs/images/result.png" in local  # the picture
    missing = [link for link in local if not (ROOT / link).exists()]
    assert missing == []
    assert (ROOT / "docs/images/result.png").stat().st_size > 10_000  # a rendered figure, not a placeholder
    for heading in ("## Install", "## The two commands", "## Your own data", "## Read more", "## Licence"):
        assert heading in text


def test_every_config_key_has_a_description():
    keys = {f.name for f in dataclasses.fields(RunConfig) if f.repr}
    assert keys == set(KEY_DOCS)
    assert all(len(KEY_DOCS[k]) > 20 for k in keys)


def _commands(group: click.Group, prefix: str = "geoseg"):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", command


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                            cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING" not in result.stderr, result.stderr[-3000:]
    return out


def _text(html_file: Path) -> str:
    return re.sub(r"<[^>]+>", " ", html_file.read_text())


def test_the_command_reference_lists_every_option_of_every_command(site):
    page = _text(site / "reference/cli/index.html")
    for name, command in _commands(cli):
        assert name.split(" ", 1)[1] in page, name
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert all(opt in page for opt in param.opts), (name, param.opts)


def test_the_config_reference_lists_every_key_with_its_meaning(site):
    page = (site / "reference/config/index.html").read_text()
    for key, meaning in KEY_DOCS.items():
        assert f"<code>{key}</code>" in page, key
        first_words = re.sub(r"`", "", meaning.split(":")[0].split(",")[0])[:25]
        assert first_words.split(" (")[0].replace("&", "&amp;") in re.sub(r"</?code>", "", page), key


def test_the_api_reference_documents_every_public_name(site):
    page = _text(site / "reference/api/index.html")
    for name in geoseg.__all__:
        assert f"geoseg.{name}" in page, name
    assert "Predict every scene of" in page  # a docstring's text, not only the headings


def test_the_notebook_runs_from_sample_data_to_a_scored_map():
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / "docs/tutorials/python-api.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    miou = float(re.search(r"held-out mIoU (\d\.\d+)", printed).group(1))
    assert 0 <= miou <= 1 and "landcover.gpkg" in printed
