"""`python -m fastce ...` runs the command-line interface (same as the `fastce` command)."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
