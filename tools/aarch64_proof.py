"""Prove that fastce's NEON kernels run under qemu-aarch64, without timing them.

Timing under qemu means nothing for the hardware: qemu-user emulates vector float instructions
lane by lane through softfloat helpers, so a NEON loop can run slower than scalar code there.
What qemu can show is *which* guest instructions ran: with ``QEMU_LOG=in_asm`` it writes every
block of guest code it translates, with addresses, to ``QEMU_LOG_FILENAME``.

So this script (run on the host, by ``tools/aarch64.sh proof``):

1. starts the arm64 Python under qemu with ``QEMU_LOG=in_asm``, running ``GUEST`` below: it reads
   the extension's executable mapping from ``/proc/self/maps`` (qemu emulates that file for the
   guest, with guest addresses), prints it, and makes one kernel call per dtype under the
   ``neon`` ISA;
2. does the same again with the ``scalar`` ISA forced, and keeps the instructions (by offset in
   the mapping) that ran with ``neon`` and not with ``scalar``: the NEON kernels' own code, not
   code that gcc auto-vectorized in the scalar kernels or in the shared driver;
3. counts the Advanced SIMD arithmetic on vector registers among them: ``fmla``/``fmax``/
   ``fadd``/... on ``v<n>.4s`` or ``v<n>.2d`` operands, and exits 0 when the NEON kernels
   executed fused multiply-adds and at least 10 such instructions (and says how many of
   which), 1 when they did not.

Usage: ``python3 tools/aarch64_proof.py PYTHON`` where PYTHON is the command that runs the arm64
interpreter under qemu (``$FASTCE_AARCH64_HOME/bin/python3.11``, the wrapper tools/aarch64.sh
writes); the environment is passed on, so qemu sees ``QEMU_LOG``.
"""
import collections
import os
import re
import subprocess
import sys
import tempfile

# One kernel call per storage dtype and the two kinds of pass, forced onto the NEON kernels.
GUEST = r"""
import numpy as np, fastce, fastce._kernels as K
lo = hi = None
for line in open("/proc/self/maps"):
    parts = line.split()
    if len(parts) >= 6 and parts[5] == K.__file__ and "x" in parts[1]:
        a, b = (int(v, 16) for v in parts[0].split("-"))
        lo = a if lo is None else min(lo, a)
        hi = b if hi is None else max(hi, b)
print("FASTCE_TEXT", hex(lo), hex(hi), flush=True)
import sys
fastce.set_isa(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 1003), dtype=np.float32)
t = rng.integers(0, 1003, 64)
dtypes = [np.float32, np.float64, np.float16]
try:
    import ml_dtypes
    dtypes.append(ml_dtypes.bfloat16)
except ImportError:
    pass
for dt in dtypes:
    fastce.cross_entropy_with_grad(x.astype(dt), t)
print("FASTCE_ISA", fastce.get_isa(), flush=True)
"""

# A translated instruction: "0x0000ffff8a1b2c3c:  4e22cc20      fmla v0.4s, v1.4s, v2.4s"
_INSN = re.compile(r"^0x([0-9a-f]+):\s+[0-9a-f]{8}\s+(\S+)\s*(.*)$")
# Advanced SIMD floating-point arithmetic on whole vector registers (4 floats or 2 doubles).
_VECTOR_FP = {"fmla", "fmls", "fmax", "fmaxnm", "fmin", "fminnm", "fadd", "fsub", "fmul", "fdiv",
              "fmaxp", "faddp", "fmaxv", "fcmgt", "fcmge", "fcmeq", "frintn", "fcvtzs", "fcvtns"}
_VECTOR_OPERAND = re.compile(r"\bv\d+\.(4s|2d)\b")


def executed(python, isa):
    """The instructions qemu translated inside the extension's executable mapping while the guest
    ran with `isa`: a set of (offset in the mapping, mnemonic, operands)."""
    with tempfile.TemporaryDirectory(prefix="fastce-proof-") as tmp:
        log_path = os.path.join(tmp, "in_asm.log")
        env = dict(os.environ, QEMU_LOG="in_asm", QEMU_LOG_FILENAME=log_path)
        run = subprocess.run([python, "-c", GUEST, isa], env=env, capture_output=True, text=True)
        text = re.search(r"^FASTCE_TEXT (0x[0-9a-f]+) (0x[0-9a-f]+)$", run.stdout, re.M)
        ran = re.search(r"^FASTCE_ISA (\w+)$", run.stdout, re.M)
        if run.returncode != 0 or not text or not ran or ran.group(1) != isa:
            sys.stderr.write(run.stdout + run.stderr)
            raise SystemExit(f"aarch64 proof: the guest Python failed to run the {isa} kernels")
        lo, hi = int(text.group(1), 16), int(text.group(2), 16)
        insns = set()
        with open(log_path, errors="replace") as f:
            for line in f:
                m = _INSN.match(line.strip())
                if m and lo <= int(m.group(1), 16) < hi:
                    insns.add((int(m.group(1), 16) - lo, m.group(2), m.group(3).strip()))
    return insns


def main(argv):
    if len(argv) != 2:
        print(__doc__.split("\n\n")[-1], file=sys.stderr)
        return 2
    neon_only = executed(argv[1], "neon") - executed(argv[1], "scalar")
    counts = collections.Counter(m for _, m, ops in neon_only
                                 if m in _VECTOR_FP and _VECTOR_OPERAND.search(ops))
    total = sum(counts.values())
    listing = ", ".join(f"{k} {v}" for k, v in counts.most_common())
    print(f"aarch64 proof: {len(neon_only)} instructions of fastce's extension ran with the neon "
          f"kernels and not with the scalar ones; {total} of them are vector float arithmetic on "
          f"v-registers ({listing or 'none'})")
    return 0 if counts["fmla"] > 0 and total >= 10 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
