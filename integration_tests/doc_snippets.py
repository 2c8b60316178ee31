"""The fenced code blocks of README.md and docs/*.md, and their markers.

Each `python` or `bash` block is preceded by an HTML comment (invisible on
GitHub and in the docs site) that says what is done with it:

    <!-- snippet: NAME (what runs it) -->   a test runs it (NAME is unique)
    <!-- not run: WHY -->                   no test runs it, and why

Plain-Python module (no Keras import): the old-stack script
`data/make_tfa_migration.py` uses it too.
"""

import glob
import os
import re
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE_LANGUAGES = ("python", "bash")

_BLOCK = re.compile(
    r"(?:^<!--\s*(?P<kind>snippet|not run):\s*(?P<note>.*?)\s*-->\n)?"
    r"^```(?P<lang>[\w-]*)\n(?P<code>.*?)^```",
    re.S | re.M,
)


class Block(NamedTuple):
    path: str  # relative to the repository root
    line: int
    lang: str
    kind: str | None  # "snippet", "not run" or None (unmarked)
    name: str | None  # a snippet's name
    note: str | None
    code: str


def pages():
    """README.md and every docs page, relative to the repository root."""
    docs = sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
    return ["README.md"] + [os.path.relpath(p, ROOT) for p in docs]


def blocks(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        text = f.read()
    out = []
    for m in _BLOCK.finditer(text):
        note = m["note"]
        name = note.split()[0] if m["kind"] == "snippet" and note else None
        line = text.count("\n", 0, m.start("lang")) + 1
        out.append(Block(path, line, m["lang"], m["kind"], name, note, m["code"]))
    return out


def all_blocks():
    return [b for p in pages() for b in blocks(p)]


def snippet(name):
    """The code of the one block marked `<!-- snippet: name ... -->`."""
    found = [b for b in all_blocks() if b.name == name]
    if len(found) != 1:
        raise LookupError(f"{len(found)} blocks marked `snippet: {name}` (want 1)")
    return found[0].code
