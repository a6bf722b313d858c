"""``python -m fastce.cli ...`` runs the command line (the same as ``fastce ...`` and ``python -m fastce ...``)."""
from . import main

if __name__ == "__main__":
    raise SystemExit(main())
