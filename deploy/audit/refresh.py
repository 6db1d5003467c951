"""Rebuild the vendored advisory subset in deploy/audit/advisories/ from an advisory database (issue #21).

    python deploy/audit/refresh.py --from /path/to/advisory-database   # a checkout or a bare git dir

Reads every OSV record of the source - YAML (pypa/advisory-database, `vulns/<package>/PYSEC-*.yaml`) or
JSON (github/advisory-database `advisories/github-reviewed/**`, an OSV PyPI dump) - keeps the PyPI
ones that affect a package named in requirements.lock and are not withdrawn, and writes each as OSV JSON
to `<out>/<package>/<id>.json` (the old files there are removed first). Then it checks that audit.py
reads every written file, and records the source repository, commit, commit date, refresh date, licence
and counts in `<out>/SOURCE.md`. Why a subset: CI audits offline, and the subset of a few hundred small
files is what our pins need; `audit.py --advisories DIR` still takes a full database.

Needs PyYAML for YAML sources (locked: pyyaml, via bokeh).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from audit import DEFAULT_ADVISORIES, DEFAULT_LOCK, ECOSYSTEM, AuditInputError, load_advisories, read_lock
from packaging.utils import canonicalize_name

__all__ = ["SOURCE_FILE", "main", "read_source", "refresh", "select"]

logger = logging.getLogger(__name__)

SOURCE_FILE = "SOURCE.md"
_SUFFIXES = (".yaml", ".yml", ".json")
# Folders of the known databases that hold no advisory (CI config, triage notes, unreviewed GHSA drafts).
_SKIP_PARTS = frozenset({".github", "triage", "unreviewed"})


def _yaml_load(text: str) -> Any:
    """Parse YAML with the safe loader, timestamps kept as strings (OSV JSON has strings there)."""
    import yaml  # only YAML sources need it

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it: ~5x faster

    class _Loader(base):  # type: ignore[valid-type,misc]
        pass

    _Loader.yaml_implicit_resolvers = {
        key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for key, resolvers in base.yaml_implicit_resolvers.items()
    }
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass, no object construction


def _wanted(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return path.endswith(_SUFFIXES) and not _SKIP_PARTS.intersection(parts)


def _git(source: Path, *args: str, input_bytes: bytes | None = None) -> bytes:
    return subprocess.run(["git", "--git-dir", str(source), *args], input=input_bytes,
                          capture_output=True, check=True).stdout


def _is_git_dir(source: Path) -> bool:
    return (source / "HEAD").is_file() and (source / "objects").is_dir()


def _read_git(source: Path) -> Iterator[tuple[str, bytes]]:
    """(path, content) of every candidate file at HEAD of a (bare) git dir, read in one `cat-file --batch`."""
    listing = _git(source, "ls-tree", "-r", "-z", "HEAD").split(b"\0")
    blobs: list[tuple[str, str]] = []
    for row in listing:
        if not row:
            continue
        meta, name = row.decode().split("\t", 1)
        _mode, kind, sha = meta.split()
        if kind == "blob" and _wanted(name):
            blobs.append((name, sha))
    batch = _git(source, "cat-file", "--batch", input_bytes="".join(f"{sha}\n" for _, sha in blobs).encode())
    pos = 0
    for name, _sha in blobs:
        header_end = batch.index(b"\n", pos)
        size = int(batch[pos:header_end].split()[2])
        yield name, batch[header_end + 1: header_end + 1 + size]
        pos = header_end + 1 + size + 1


def _git_meta(source: Path) -> tuple[str, str]:
    """(commit, commit date ISO) of the source's HEAD, or ("unknown", "unknown") when it is not a git repo."""
    git_dir = source if _is_git_dir(source) else source / ".git"
    try:
        out = _git(git_dir, "log", "-1", "--format=%H %cI", "HEAD").decode().split()
    except (subprocess.CalledProcessError, OSError):
        return "unknown", "unknown"
    return out[0], out[1]


def read_source(source: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, OSV record) of every advisory file of a checkout or a git dir; files that are not OSV records
    (no `id` or no `affected`) are skipped, files that do not parse raise AuditInputError."""
    if _is_git_dir(source):
        files: Iterator[tuple[str, bytes]] = _read_git(source)
    elif source.is_dir():
        files = ((p.relative_to(source).as_posix(), p.read_bytes())
                 for p in sorted(source.rglob("*")) if p.is_file() and _wanted(p.relative_to(source).as_posix()))
    else:
        raise AuditInputError(source, "not a directory (want an advisory-database checkout or git dir)")
    for name, content in files:
        try:
            text = content.decode("utf-8")
            record = json.loads(text) if name.endswith(".json") else _yaml_load(text)
        except Exception as exc:  # any parser error: name the file, one line
            raise AuditInputError(f"{source}:{name}", f"does not parse: {exc}") from exc
        if isinstance(record, dict) and "id" in record and "affected" in record:
            yield name, record


def select(records: Iterator[tuple[str, dict[str, Any]]], names: frozenset[str]) -> dict[str, dict[str, Any]]:
    """The not-withdrawn records with a PyPI `affected` entry for one of `names`, keyed by the output path
    `<first such package>/<id>.json`. Records of one id seen twice keep the later `modified` one."""
    chosen: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, record in records:
        if record.get("withdrawn"):
            continue
        packages = sorted(
            canonicalize_name(entry["package"]["name"])
            for entry in record.get("affected") or []
            if isinstance(entry, dict) and isinstance(entry.get("package"), dict)
            and entry["package"].get("ecosystem") == ECOSYSTEM and isinstance(entry["package"].get("name"), str)
            and canonicalize_name(entry["package"]["name"]) in names
        )
        if not packages:
            continue
        advisory_id = str(record["id"])
        previous = chosen.get(advisory_id)
        if previous is not None and str(previous[1].get("modified", "")) >= str(record.get("modified", "")):
            continue
        if previous is not None:
            logger.info("%s appears twice; keeping %s", advisory_id, name)
        chosen[advisory_id] = (f"{packages[0]}/{advisory_id}.json", record)
    return {path: record for path, record in chosen.values()}


def _source_md(repo: str, commit: str, committed: str, licence: str, selected: dict[str, dict[str, Any]],
               lock: Path, names: frozenset[str], note: str) -> str:
    per_package = Counter(path.split("/", 1)[0] for path in selected)
    rows = "\n".join(f"| {name} | {count} |" for name, count in sorted(per_package.items()))
    today = dt.datetime.now(dt.UTC).date().isoformat()
    covered = "\n".join(f"- {name}" for name in sorted(names))
    return f"""# Vendored OSV advisories

The advisories of the packages pinned in `{lock.name}` ({len(names)} packages), as OSV JSON, read by
`deploy/audit/audit.py`. Rebuilt by `deploy/audit/refresh.py --from <checkout or git dir>`; do not edit
by hand.

- Source repository: {repo}
- Source commit: {commit}
- Source commit date: {committed}{f"{chr(10)}- Note: {note}" if note else ""}
- Refreshed on: {today}
- Licence: {licence}. The records are the source's, converted from YAML to JSON
  where needed; withdrawn records and records of packages we do not pin are left out. Nothing else
  is changed.
- Advisory files: {len(selected)}

The subset is only as new as the source commit above: refresh it (or pass `--advisories` a fresh
database) before trusting a clean audit.

| package | advisories |
|---|---|
{rows}

## Packages covered

The pins of the lock at refresh time (audit.py notes pins missing here: refresh after `make lock`).

{covered}
"""


def refresh(source: Path, out: Path, lock: Path, repo: str, licence: str, note: str = "") -> int:
    """Rebuild `out` from `source` for the pins of `lock`; return the number of advisory files written."""
    pins = read_lock(lock)
    names = frozenset(pin.name for pin in pins)
    selected = select(read_source(source), names)
    if not selected:
        raise AuditInputError(source, "no advisory of a locked package found; is this an advisory database?")
    commit, committed = _git_meta(source)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*/*.json"):
        old.unlink()
    for old_dir in [d for d in out.iterdir() if d.is_dir() and not any(d.iterdir())]:
        old_dir.rmdir()
    for path, record in sorted(selected.items()):
        target = out / path
        target.parent.mkdir(exist_ok=True)
        target.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / SOURCE_FILE).write_text(_source_md(repo, commit, committed, licence, selected, lock, names, note),
                                   encoding="utf-8")
    loaded = load_advisories(out, names)  # the audit must read every file it will be given
    if len(loaded) != len(selected):
        raise AuditInputError(out, f"wrote {len(selected)} files but the audit reads {len(loaded)}")
    return len(selected)


def main(argv: list[str] | None = None) -> int:
    """CLI: rebuild the subset; exit 0, or 2 with one line on a bad source or lock."""
    parser = argparse.ArgumentParser(prog="refresh.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path, required=True,
                        help="advisory-database checkout or (bare) git dir")
    parser.add_argument("--out", type=Path, default=DEFAULT_ADVISORIES, help="default: %(default)s")
    parser.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help="default: %(default)s")
    parser.add_argument("--repo", default="https://github.com/pypa/advisory-database",
                        help="source repository URL recorded in SOURCE.md (default: %(default)s)")
    parser.add_argument("--licence", default="CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/)",
                        help="source licence recorded in SOURCE.md (default: %(default)s)")
    parser.add_argument("--note", default="", help="one line on the source's provenance, recorded in SOURCE.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        count = refresh(args.source, args.out, args.lock, args.repo, args.licence, " ".join(args.note.split()))
    except AuditInputError as exc:
        sys.stderr.write(f"refresh: error: {exc}\n")
        return 2
    logger.info("wrote %d advisories to %s", count, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
