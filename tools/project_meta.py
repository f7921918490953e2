"""What the Makefile needs from pyproject.toml, so that the requirements are written down once.

    python tools/project_meta.py check-python   exit 1 with a one-line message if this Python is too old
    python tools/project_meta.py extras         print every optional extra, comma-separated

It runs under whatever `python3` a fresh machine has, before any virtual environment exists, so it sticks to
syntax and modules that every Python 3 (and 2.7, to still give the message there) has: no tomllib (3.11+),
no f-strings. pyproject.toml is read with two regular expressions; tests/test_project_meta.py checks them
against tomllib.
"""
import os
import re
import sys

PYPROJECT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml")


def read_pyproject(path=PYPROJECT):
    with open(path) as handle:
        return handle.read()


def requires_python(text):
    """The requires-python specifier of [project], e.g. '>=3.10'."""
    match = re.search(r'^requires-python\s*=\s*["\']([^"\']+)["\']', text, re.MULTILINE)
    if not match:
        raise ValueError("pyproject.toml has no requires-python")
    return match.group(1)


def extras(text):
    """Names of the [project.optional-dependencies] table, in file order."""
    match = re.search(r"^\[project\.optional-dependencies\]\s*$(.*?)(?=^\[|\Z)", text, re.MULTILINE | re.DOTALL)
    if not match:
        return []
    return re.findall(r'^["\']?([A-Za-z0-9][A-Za-z0-9._-]*)["\']?\s*=', match.group(1), re.MULTILINE)


def _release(text):
    return tuple(int(part) for part in text.split("."))


def _padded(a, b):
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)), b + (0,) * (width - len(b))


def satisfies(version, specifier):
    """True if the release tuple ``version`` meets every clause of ``specifier`` (PEP 440 operators on plain
    release numbers, which is all requires-python uses: '>=3.10', '>=3.10,<4', '==3.11.*', '~=3.10')."""
    for clause in specifier.split(","):
        clause = clause.strip()
        if not clause:
            continue
        match = re.match(r"^(~=|===|==|!=|<=|>=|<|>)\s*([0-9]+(?:\.[0-9]+)*)(\.\*)?$", clause)
        if not match:
            raise ValueError("cannot read the requires-python clause {0!r}".format(clause))
        op, wanted, wildcard = match.group(1), _release(match.group(2)), match.group(3)
        if wildcard and op in ("==", "!="):
            if (_padded(version, wanted)[0][:len(wanted)] == wanted) != (op == "=="):
                return False
            continue
        have, need = _padded(version, wanted)
        if op == "~=":
            ok = have >= need and version[:len(wanted) - 1] == wanted[:-1]
        else:
            ok = {"==": have == need, "===": have == need, "!=": have != need, "<=": have <= need,
                  ">=": have >= need, "<": have < need, ">": have > need}[op]
        if not ok:
            return False
    return True


def check_python(text):
    """None if the running Python meets requires-python, else the one-line message."""
    specifier = requires_python(text)
    version = tuple(sys.version_info[:3])
    if satisfies(version, specifier):
        return None
    return ("blazeface needs Python {0} (requires-python in pyproject.toml); {1} is Python {2}. "
            "Install a newer one and name it: make demo PYTHON=/path/to/python3.X"
            .format(specifier, sys.executable, ".".join(str(v) for v in version)))


def main(argv):
    if argv == ["check-python"]:
        message = check_python(read_pyproject())
        if message:
            sys.stderr.write(message + "\n")
            return 1
        return 0
    if argv == ["extras"]:
        sys.stdout.write(",".join(extras(read_pyproject())) + "\n")
        return 0
    sys.stderr.write("usage: python tools/project_meta.py check-python|extras\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
