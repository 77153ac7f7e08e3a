"""Rewrite the config reference in README.md from the pydantic models (`make docs`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from rayline.config import config_reference

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def main(readme: str = "README.md") -> int:
    path = Path(readme)
    text = path.read_text()
    block = f"{START}\n{config_reference()}{END}"
    new, count = re.subn(
        re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S
    )
    if count != 1:
        print(f"{readme}: expected one {START} ... {END} block", file=sys.stderr)
        return 1
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
