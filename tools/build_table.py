"""Read fastce's build table, include/fastce/build_table.h, for setup.py and tools/sanitize.sh.

The table is C (X-macro rows, see the header); this module parses its rows with a regex, so
that the build and the C code read the same rows:

    FASTCE_ISA_ROW(name, FASTCE_ISA_<NAME>, "arch", "flags", "vector header", check)
    FASTCE_DTYPE_ROW(name, FASTCE_DT_<DTYPE>, __VA_ARGS__)

Imported by setup.py (`read(path)`, `host_arch()`, `rows_for(arch)`); run by tools/sanitize.sh:

    python3 tools/build_table.py --rows [--arch ARCH]   one line per ISA row built on ARCH
                                                        (default: this machine), "name|CODE|flags"
    python3 tools/build_table.py --dtypes               one line per dtype row, "name|CODE"

Only the standard library: setup.py imports it before anything is built.
"""
import argparse
import os
import platform
import re
import sys
from typing import List, NamedTuple

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PATH = os.path.join(os.path.dirname(HERE), "include", "fastce", "build_table.h")


class IsaRow(NamedTuple):
    name: str      # the tag: fastce_kernels_<name>_<dtype>, fastce.get_isa()
    code: str      # the code macro, FASTCE_ISA_<NAME>
    value: int     # its value
    arch: str      # "any", "x86", ...
    flags: List[str]
    header: str    # the vector header kernels.c includes
    check: str     # the runtime check in dispatch.c

    @property
    def have_macro(self):
        """What setup.py defines (to 1) when it built the row; dispatch.c tests it."""
        return f"FASTCE_HAVE_{self.name}"


class DtypeRow(NamedTuple):
    name: str      # the symbol suffix: f32, f16, bf16, f64
    code: str      # FASTCE_DT_<DTYPE>
    value: int


class BuildTable(NamedTuple):
    isas: List[IsaRow]      # in code order
    dtypes: List[DtypeRow]  # in build order (largest objects first)


_DEFINE = re.compile(r"^#define\s+(FASTCE_(?:ISA|DT)_[A-Z0-9_]+)\s+(\d+)\s*$", re.M)
_ISA_ROW = re.compile(
    r'^\s*FASTCE_ISA_ROW\(\s*(\w+)\s*,\s*(\w+)\s*,\s*"([^"]*)"\s*,\s*"([^"]*)"\s*,\s*"([^"]*)"\s*,\s*(\w+)\s*\)',
    re.M)
_DTYPE_ROW = re.compile(r"^\s*FASTCE_DTYPE_ROW\(\s*(\w+)\s*,\s*(\w+)\s*,\s*__VA_ARGS__\s*\)", re.M)


def read(path=DEFAULT_PATH):
    """The rows of the table, checked: known codes, ISA codes 0, 1, 2 ... in row order."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    codes = {name: int(value) for name, value in _DEFINE.findall(text)}

    def value(code):
        if code not in codes:
            raise ValueError(f"{path}: {code} is used in a row but has no #define")
        return codes[code]

    isas = [IsaRow(n, c, value(c), a, fl.split(), h, ch) for n, c, a, fl, h, ch in _ISA_ROW.findall(text)]
    dtypes = [DtypeRow(n, c, value(c)) for n, c in _DTYPE_ROW.findall(text)]
    if not isas or not any(r.arch == "any" for r in isas):
        raise ValueError(f"{path}: no ISA row, or none for every arch (the scalar row)")
    if [r.value for r in isas] != list(range(len(isas))):
        raise ValueError(f"{path}: the ISA rows' codes must be 0, 1, 2 ... in row order")
    if sorted(r.value for r in dtypes) != list(range(len(dtypes))):
        raise ValueError(f"{path}: the dtype codes must be 0 .. {len(dtypes) - 1}")
    for rows in (isas, dtypes):
        names = [r.name for r in rows]
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: a row name appears twice: {names}")
    return BuildTable(isas, dtypes)


def host_arch(machine=None):
    """The table's name for this machine's architecture (or `machine`'s, as platform.machine())."""
    m = (machine or platform.machine()).lower()
    if m in ("x86_64", "amd64", "i386", "i486", "i586", "i686", "x86"):
        return "x86"
    if m in ("aarch64", "arm64"):
        return "aarch64"
    return m


def rows_for(table, arch=None):
    """The ISA rows that can be built for `arch` (default: this machine): its own and "any"."""
    arch = arch or host_arch()
    return [r for r in table.isas if r.arch in ("any", arch)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", default=DEFAULT_PATH)
    p.add_argument("--arch", default=None, help="default: this machine's")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--rows", action="store_true", help="name|CODE|flags of each ISA row built on ARCH")
    g.add_argument("--dtypes", action="store_true", help="name|CODE of each dtype row")
    args = p.parse_args(argv)
    table = read(args.table)
    if args.rows:
        for r in rows_for(table, args.arch):
            print(f"{r.name}|{r.code}|{' '.join(r.flags)}")
    else:
        for r in table.dtypes:
            print(f"{r.name}|{r.code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
