"""mkdocs hooks: the reference pages that are generated from the code, so they cannot drift from it.

``{{ config_keys }}`` in a page becomes the table of every key :class:`geoseg.training.config.RunConfig`
accepts (type, default, meaning from ``KEY_DOCS``); ``{{ public_api }}`` becomes one mkdocstrings block per
name of ``geoseg.__all__``. The commands' page uses mkdocs-click directly.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "{{ config_keys }}" in markdown:
        markdown = markdown.replace("{{ config_keys }}", config_keys_table())
    if "{{ public_api }}" in markdown:
        markdown = markdown.replace("{{ public_api }}", public_api_blocks())
    return markdown


def config_keys_table() -> str:
    from geoseg.training.config import KEY_DOCS, RunConfig

    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(RunConfig):
        if not f.repr:  # base_dir: where the file lives, not a key
            continue
        rows.append(f"| `{f.name}` | `{_cell(str(f.type))}` | {_default(f)} | {_cell(KEY_DOCS[f.name])} |")
    return "\n".join(rows)


def _default(f: dataclasses.Field) -> str:
    from geoseg.io.classes import DEEPGLOBE

    value = f.default_factory() if f.default is dataclasses.MISSING else f.default
    if value is DEEPGLOBE:
        return "`deepglobe`"
    return "`null`" if value is None else f"`{_cell(str(value).replace(chr(39), ''))}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def public_api_blocks() -> str:
    import geoseg

    blocks = []
    for name in geoseg.__all__:
        target = f"{geoseg._PUBLIC[name]}.{geoseg._ALIASES.get(name, name)}"
        blocks.append(f"## `geoseg.{name}`\n\n::: {target}\n    options:\n      show_root_heading: false\n")
    return "\n".join(blocks)
