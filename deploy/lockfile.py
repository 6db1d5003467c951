"""The runtime part of ``requirements.lock``: the pins and hashes the Docker image installs.

``requirements.lock`` pins the runtime dependencies AND the dev extras (pytest, mypy, playwright ...),
all with hashes (``make lock``: ``uv pip compile --extra dev --generate-hashes``). The image must not
carry the dev tools, and must install exactly what CI tested: this keeps the lock's entries (name,
version, hashes, verbatim) of the packages the project's ``[project] dependencies`` need, found through
the lock's own ``# via`` notes (a package is kept when one of the packages it is there for is kept, or
when it is a direct runtime dependency). Stdlib only: it runs in the image's build stage.

    python deploy/lockfile.py requirements.lock pyproject.toml > runtime.lock
    pip install --require-hashes -r runtime.lock
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LockEntry", "normalize", "parse_lock", "runtime_lock", "runtime_names"]

#: the project itself, as uv names it in the ``# via`` notes
_ROOT = re.compile(r"^rtqis\b")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==")
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them (``Foo_Bar`` = ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class LockEntry:
    """One pin of the lock: its name, its lines (pin, hashes, notes) and what it is there for."""

    name: str
    lines: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)


def parse_lock(text: str) -> list[LockEntry]:
    """The entries of a ``uv pip compile`` lock, in order (header comments dropped)."""
    entries: list[LockEntry] = []
    in_via = False
    for line in text.splitlines():
        m = _PIN.match(line)
        if m:
            entries.append(LockEntry(normalize(m.group(1)), [line]))
            in_via = False
            continue
        if not entries or not line.startswith(" "):
            continue  # the header, blank lines
        e = entries[-1]
        e.lines.append(line)
        note = line.strip()
        if note.startswith("# via"):
            rest = note.removeprefix("# via").strip()
            in_via = not rest
            if rest:
                e.via.append(rest)
        elif in_via and note.startswith("#   "):
            e.via.append(note.removeprefix("#").strip())
        elif not note.startswith("#"):
            in_via = False
    return entries


def runtime_names(entries: list[LockEntry], direct: set[str]) -> set[str]:
    """Names of the entries the runtime needs: the ``direct`` dependencies and what they pull in."""
    keep = {e.name for e in entries if e.name in direct}
    changed = True
    while changed:
        changed = False
        for e in entries:
            if e.name in keep:
                continue
            if any(not _ROOT.match(v) and normalize(v.split()[0]) in keep for v in e.via):
                keep.add(e.name)
                changed = True
    return keep


def _direct(pyproject: str) -> set[str]:
    deps = tomllib.loads(pyproject)["project"]["dependencies"]
    out = set()
    for d in deps:
        m = _REQ_NAME.match(d)
        if m:
            out.add(normalize(m.group(1)))
    return out


def runtime_lock(lock_text: str, pyproject_text: str) -> str:
    """The lock's runtime entries, verbatim (a valid ``--require-hashes`` requirements file)."""
    entries = parse_lock(lock_text)
    direct = _direct(pyproject_text)
    missing = direct - {e.name for e in entries}
    if missing:
        raise SystemExit(f"requirements.lock has no pin for {sorted(missing)}: run `make lock`")
    keep = runtime_names(entries, direct)
    head = "# The runtime pins of requirements.lock (deploy/lockfile.py): no dev extras.\n"
    return head + "".join("\n".join(e.lines) + "\n" for e in entries if e.name in keep)


def main(argv: list[str]) -> int:
    lock = Path(argv[0] if argv else "requirements.lock")
    pyproject = Path(argv[1] if len(argv) > 1 else "pyproject.toml")
    sys.stdout.write(runtime_lock(lock.read_text(), pyproject.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
