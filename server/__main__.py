"""`python -m server [serve options]`: the same as `persona-steer serve [options]` (the original
system started its web UI with `python web/api.py`; this is that one line here)."""
from __future__ import annotations

import sys

from persona_steer.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
