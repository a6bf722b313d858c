"""Every code example of the documentation runs.

(a) The ```python blocks of README.md and docs/**/*.md: each file's blocks run in order in one
    fresh namespace (a file is one test), so a later block may use an earlier block's names.
    A block that fails names its file and line. A block opts out only by not being Python: shell
    commands go in ```bash / ```console / ```text blocks. ```pycon blocks (and python blocks
    that start with ">>>") run as doctests in the same namespace.
(b) The `fastce ...` command lines of the ```bash / ```console blocks are not run (they name
    files that do not exist here), but each must parse with the real argument parser.
(c) The ``>>>`` examples of every public docstring: ``fastce.__all__``, ``fastce.torch``,
    ``fastce.dask``, ``fastce.reference``; one test per object that has examples, run with
    ELLIPSIS | NORMALIZE_WHITESPACE in a namespace holding ``np`` and ``fastce``.
"""
from __future__ import annotations

import doctest
import importlib
import inspect
import re
import shlex
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Fence languages that hold Python to run, doctest sessions, shell commands, and other text.
PYTHON = {"python", "py", "python3"}
PYCON = {"pycon"}
SHELL = {"bash", "console", "sh", "shell"}
OTHER = {"text", "none", "{eval-rst}", "rst", "{toctree}", "{figure}", "json", "c", "toml", "ini",
         "yaml", "{math}", "{note}", "{warning}", "diff", "{code-block}", "{code}"}

_FENCE = re.compile(r"^(?P<indent>[ ]{0,3})(?P<fence>`{3,}|~{3,}|:{3,})(?P<info>[^\n`]*)$")


def _doc_files():
    files = [ROOT / "README.md"]
    if DOCS.is_dir():
        files += sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
    return [f for f in files if f.is_file()]


def _blocks(path: Path):
    """(language, first line number of the body, body) of each fenced block of a Markdown file.

    The language is the info string's first word; for MyST directives ```{code-block} python it
    is the directive's argument.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m or m.group("fence")[0] == ":":
            i += 1
            continue
        fence, info = m.group("fence"), m.group("info").strip()
        words = info.split()
        lang = words[0].lower() if words else ""
        if lang in ("{code-block}", "{code}", "{code-cell}") and len(words) > 1:
            lang = words[1].lower()
        body, j = [], i + 1
        while j < len(lines) and not (
            lines[j].strip().startswith(fence[0] * len(fence))
            and lines[j].strip().strip(fence[0]) == ""
        ):
            body.append(lines[j])
            j += 1
        # MyST directive options (":key: value") at the top of a {code-block} are not code.
        if info.startswith("{"):
            while body and body[0].startswith(":"):
                body.pop(0)
        out.append((lang, i + 2, "\n".join(body) + "\n"))
        i = j + 1
    return out


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


DOC_FILES = _doc_files()
FILES_WITH_PYTHON = [
    f for f in DOC_FILES if any(lang in PYTHON | PYCON for lang, _, _ in _blocks(f))
]


def _run_doctest_text(text, namespace, name, filename, lineno):
    parser = doctest.DocTestParser()
    test = parser.get_doctest(text, namespace, name, filename, lineno)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    runner.run(test, out=report.append, clear_globs=False)
    return runner.failures, "".join(report)


@pytest.mark.parametrize("path", FILES_WITH_PYTHON, ids=_rel)
def test_markdown_python_blocks_run(path, tmp_path, monkeypatch):
    # Examples may write files: they run in a scratch directory, with a headless matplotlib.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__docs_example__"}
    for lang, lineno, body in _blocks(path):
        where = f"{_rel(path)}, block at line {lineno}"
        if lang in PYCON or (lang in PYTHON and body.lstrip().startswith(">>>")):
            failures, report = _run_doctest_text(body, namespace, where, str(path), lineno - 1)
            if failures:
                pytest.fail(f"{where}: doctest failed\n{report}", pytrace=False)
        elif lang in PYTHON:
            # Pad with blank lines so a traceback's line numbers are the file's.
            code = compile("\n" * (lineno - 1) + body, str(path), "exec")
            try:
                exec(code, namespace)
            except Exception:
                tb = traceback.format_exc(limit=-3)
                pytest.fail(f"{where} raised:\n{tb}", pytrace=False)


@pytest.mark.parametrize("path", DOC_FILES, ids=_rel)
def test_fences_are_labelled(path):
    """Every fenced block says its language, so no Python example escapes (a) unlabelled, and
    shell blocks hold no '>>>' sessions."""
    for lang, lineno, body in _blocks(path):
        where = f"{_rel(path)}, block at line {lineno}"
        assert lang, f"{where}: a code block needs a language (python, bash, text, ...)"
        assert lang in PYTHON | PYCON | SHELL | OTHER, f"{where}: unknown block language {lang!r}"
        if lang in SHELL:
            assert ">>>" not in body, f"{where}: a '>>>' session belongs in a python block"


def _shell_commands(body):
    """The command lines of a shell block: comments and prompts stripped, continuations joined."""
    cmds, cur = [], ""
    for raw in body.splitlines():
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        cur += line
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        cmds.append(cur)
        cur = ""
    if cur:
        cmds.append(cur)
    return cmds


def _fastce_commands():
    found = []
    for path in DOC_FILES:
        for lang, lineno, body in _blocks(path):
            if lang not in SHELL:
                continue
            for cmd in _shell_commands(body):
                words = shlex.split(cmd, comments=True)
                # "FASTCE_ISA=avx2 fastce bench": environment assignments first.
                while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                    words.pop(0)
                if words[:1] == ["fastce"]:
                    found.append((f"{_rel(path)}:{lineno}", words[1:]))
                elif words[:3] in (["python", "-m", "fastce"], [sys.executable, "-m", "fastce"]):
                    found.append((f"{_rel(path)}:{lineno}", words[3:]))
    return found


FASTCE_COMMANDS = _fastce_commands()


@pytest.mark.parametrize("where,argv", FASTCE_COMMANDS, ids=[w for w, _ in FASTCE_COMMANDS])
def test_cli_examples_parse(where, argv):
    from fastce.cli import build_parser

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse's way of refusing (or of printing --help/--version)
        if e.code not in (0, None):
            pytest.fail(f"{where}: `fastce {' '.join(argv)}` does not parse", pytrace=False)
        return
    assert getattr(args, "command", None), f"{where}: `fastce {' '.join(argv)}` names no command"


def test_getting_started_shows_the_two_commands():
    text = (DOCS / "getting_started.md").read_text(encoding="utf-8")
    shell = [c for lang, _, b in _blocks(DOCS / "getting_started.md") if lang in SHELL
             for c in _shell_commands(b)]
    assert "fastce bench" in shell and "python -m pytest tests" in shell, shell
    readme = [c for lang, _, b in _blocks(ROOT / "README.md") if lang in SHELL
              for c in _shell_commands(b)]
    assert "fastce bench" in readme and "python -m pytest tests" in readme, readme
    assert "docs/index.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert text


def test_api_reference_lists_every_public_name():
    import fastce

    api = (DOCS / "api" / "index.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^   ([A-Za-z_][A-Za-z0-9_]*)$", api, re.M))
    missing = [n for n in fastce.__all__ if n != "__version__" and n not in listed]
    assert not missing, f"docs/api/index.md does not list {missing}"
    for modname in ("fastce.torch", "fastce.dask", "fastce.reference"):
        assert f".. currentmodule:: {modname}" in api, modname


# --- (c) docstring examples ----------------------------------------------------------------------

def _public_objects():
    """(name, object, globals) of every public object whose docstrings may hold examples."""
    import fastce

    out = []
    for name in fastce.__all__:
        if name.startswith("__"):
            continue
        out.append((f"fastce.{name}", getattr(fastce, name)))
    for modname in ("fastce.torch", "fastce.dask", "fastce.reference"):
        try:
            mod = importlib.import_module(modname)
        except ImportError:  # torch or dask absent: their tests skip elsewhere too
            continue
        out.append((modname, mod))
        for name in getattr(mod, "__all__", []):
            out.append((f"{modname}.{name}", getattr(mod, name)))
    return out


def _docstring_tests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    seen, tests = set(), []
    for name, obj in _public_objects():
        module = inspect.getmodule(obj) if not inspect.ismodule(obj) else obj
        # module=False: also search members defined elsewhere (methods of re-exported classes);
        # a module object is searched for its own docstring only (its members are listed apart).
        found = finder.find(obj, name, module=False) if not inspect.ismodule(obj) else [
            t for t in finder.find(obj, name) if t.name == name
        ]
        for t in found:
            key = (t.filename, t.lineno, t.docstring)
            if not t.examples or key in seen:
                continue
            seen.add(key)
            tests.append((t, module))
    return tests


try:
    DOCSTRING_TESTS = _docstring_tests()
except Exception as exc:  # pragma: no cover - an import error is reported by the test itself
    DOCSTRING_TESTS = []
    _COLLECT_ERROR = exc
else:
    _COLLECT_ERROR = None


def test_docstring_examples_collected():
    assert _COLLECT_ERROR is None, f"collecting docstring examples failed: {_COLLECT_ERROR!r}"


@pytest.mark.parametrize("test,module", DOCSTRING_TESTS,
                         ids=[t.name for t, _ in DOCSTRING_TESTS] or None)
def test_docstring_examples(test, module, tmp_path, monkeypatch):
    import fastce

    monkeypatch.chdir(tmp_path)
    globs = dict(vars(module)) if module is not None else {}
    globs.setdefault("np", np)
    globs.setdefault("fastce", fastce)
    test.globs = globs
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    with np.printoptions(legacy=False):
        runner.run(test, out=report.append)
    if runner.failures:
        pytest.fail(f"{test.name} ({test.filename}:{test.lineno}):\n" + "".join(report),
                    pytrace=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
