"""``python -m rayline``: the ``rayline`` command (what a submitted Ray job runs)."""

from rayline.cli import main

main()
