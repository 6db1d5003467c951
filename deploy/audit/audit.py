"""Offline audit of the locked dependencies against OSV advisories (issue #21, Security).

Why not `pip-audit`: it asks PyPI's JSON API and api.osv.dev at run time, and neither is reachable
from CI here. This script needs nothing but the standard library and `packaging` (locked in
requirements.lock): it reads the pins of requirements.lock and a directory of OSV JSON advisories
(by default the vendored subset in deploy/audit/advisories/, rebuilt by refresh.py; `--advisories DIR`
points at a full, fresh database such as an OSV PyPI dump or github/advisory-database), evaluates each
advisory's `affected` entries for our pins the way the OSV schema defines them (ECOSYSTEM/SEMVER
ranges of introduced / fixed / last_affected / limit events, and explicit `versions` lists), and
honours an allow-list (deploy/audit/ignore.toml: advisory id, reason, review date).

Output: one line per finding, `VULN name==version ID fixed in X [aliases]`; ignored findings as
`IGNORED ...: reason (review by DATE)`; then one summary line. Exit status: 0 when every finding is
ignored (or there is none), 1 on an unignored finding, 2 with one line on stderr when an input file
(lock, advisory, ignore file) is unreadable or malformed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import re
import sys
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

__all__ = [
    "DEFAULT_ADVISORIES",
    "DEFAULT_IGNORE",
    "DEFAULT_LOCK",
    "ECOSYSTEM",
    "STALE_AFTER_DAYS",
    "Advisory",
    "Affected",
    "AuditInputError",
    "Finding",
    "IgnoreEntry",
    "Pin",
    "audit",
    "database_source",
    "load_advisories",
    "load_advisory",
    "main",
    "read_ignore",
    "read_lock",
]

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
DEFAULT_LOCK = HERE.parents[1] / "requirements.lock"
DEFAULT_ADVISORIES = HERE / "advisories"
DEFAULT_IGNORE = HERE / "ignore.toml"
ECOSYSTEM = "PyPI"
# Past this age (days) of the database's source commit, the audit notes (without failing) that it is stale.
STALE_AFTER_DAYS = 90

# Range types whose events are package versions; GIT ranges name commits and are covered by `versions`.
_VERSION_RANGES = frozenset({"ECOSYSTEM", "SEMVER"})
_EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")
_ZERO = Version("0")
# requirements-file options that change nothing about which versions are installed.
_HARMLESS_OPTIONS = ("--index-url", "--extra-index-url", "--find-links", "--trusted-host", "--prefer-binary",
                     "--only-binary", "--no-binary", "-i ", "-f ")


class AuditInputError(Exception):
    """An input file is unreadable or malformed; the CLI prints `audit: error: PATH: reason` and exits 2."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(reason.split())  # always one line
        super().__init__(f"{self.path}: {self.reason}")


@dataclass(frozen=True)
class Pin:
    """One locked requirement: canonical name (PEP 503), version, and where it is written."""

    name: str
    version: Version
    text: str
    line: int


@dataclass(frozen=True)
class Affected:
    """One `affected` entry of an advisory for a PyPI package.

    `ranges` holds the ECOSYSTEM/SEMVER event lists, each as (kind, version) pairs in the order
    written; `introduced: "0"` is kept as version None (lower than every version).
    """

    name: str
    ranges: tuple[tuple[tuple[str, Version | None], ...], ...]
    versions: frozenset[str]


@dataclass(frozen=True)
class Advisory:
    """The part of an OSV record the audit uses: ids, summary, and the PyPI `affected` entries."""

    id: str
    aliases: tuple[str, ...]
    summary: str
    path: Path
    affected: tuple[Affected, ...]
    withdrawn: bool = False


@dataclass(frozen=True)
class IgnoreEntry:
    """An allow-list entry: an advisory id (or alias) accepted for `reason` until `review`."""

    id: str
    reason: str
    review: dt.date


@dataclass
class Finding:
    """A pin that an advisory (and possibly aliases of it from other databases) says is vulnerable."""

    pin: Pin
    id: str
    ids: set[str]
    fixed: list[str]
    ignore: IgnoreEntry | None = None
    expired: bool = False
    aliases: set[str] = field(default_factory=set)

    @property
    def counts(self) -> bool:
        """True when the finding fails the audit: not ignored, or its ignore entry is past its review date."""
        return self.ignore is None or self.expired

    def line(self) -> str:
        """The one-line report: package, version, id, the versions that fix it, the aliases."""
        fixed = ", ".join(self.fixed) if self.fixed else "no fixed version known"
        others = sorted((self.ids | self.aliases) - {self.id})
        text = f"{self.pin.name}=={self.pin.version} {self.id} fixed in {fixed}"
        if others:
            text += f" [{', '.join(others)}]"
        if self.ignore is None:
            return f"VULN {text}"
        if self.expired:
            return f"VULN {text} (ignore entry expired on {self.ignore.review.isoformat()}: review it)"
        return f"IGNORED {text}: {self.ignore.reason} (review by {self.ignore.review.isoformat()})"


# ---------------------------------------------------------------------------------------------- lock


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """Join backslash continuations; yield (first line number, logical line) without comments."""
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not buf:
            start = number
        if line.endswith("\\"):
            buf.append(line[:-1])
            continue
        buf.append(line)
        joined = " ".join(part.strip() for part in buf).strip()
        buf = []
        if " #" in joined:
            joined = joined[: joined.index(" #")].rstrip()
        if joined and not joined.startswith("#"):
            yield start, joined
    if buf:
        yield start, " ".join(part.strip() for part in buf).strip()


def read_lock(path: Path) -> list[Pin]:
    """Read the exact pins (`name==version`) of a requirements lock such as uv's `--generate-hashes` output.

    Every requirement must be pinned to one exact version: a range, a URL, `-e`, `-r` or `-c` makes the
    lock un-auditable and raises AuditInputError. Hash options are dropped; environment markers are kept
    out of the decision (a pin for another platform is audited too).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditInputError(path, f"cannot read the lock: {exc}") from exc
    pins: list[Pin] = []
    for number, line in _logical_lines(text):
        if line.startswith("-"):
            if line.startswith(_HARMLESS_OPTIONS):
                continue
            raise AuditInputError(path, f"line {number}: option not supported in a lock: {line.split()[0]}")
        requirement_text = line.split(" --", 1)[0].strip()
        try:
            requirement = Requirement(requirement_text)
        except InvalidRequirement as exc:
            raise AuditInputError(path, f"line {number}: not a requirement: {exc}") from exc
        specifiers = list(requirement.specifier)
        if requirement.url or len(specifiers) != 1 or specifiers[0].operator not in ("==", "===") \
                or specifiers[0].version.endswith(".*"):
            raise AuditInputError(path, f"line {number}: not pinned to one exact version: {requirement_text}")
        try:
            version = Version(specifiers[0].version)
        except InvalidVersion as exc:
            raise AuditInputError(path, f"line {number}: {exc}") from exc
        pins.append(Pin(canonicalize_name(requirement.name), version, requirement_text, number))
    if not pins:
        raise AuditInputError(path, "no pinned requirement found")
    return pins


# ---------------------------------------------------------------------------------------- advisories


def _strings(value: object, what: str, path: Path) -> tuple[str, ...]:
    """A JSON list of strings (missing = empty), or AuditInputError."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise AuditInputError(path, f"{what} must be a list of strings")
    return tuple(value)


def _version(text: object, what: str, path: Path) -> Version:
    if not isinstance(text, str):
        raise AuditInputError(path, f"{what} must be a string, got {text!r}")
    try:
        return Version(text)
    except InvalidVersion as exc:
        raise AuditInputError(path, f"{what}: {exc}") from exc


def _events(raw: object, package: str, path: Path) -> tuple[tuple[str, Version | None], ...]:
    """The events of one ECOSYSTEM/SEMVER range, each exactly one of introduced/fixed/last_affected/limit."""
    if not isinstance(raw, list) or not raw:
        raise AuditInputError(path, f"{package}: range events must be a non-empty list")
    events: list[tuple[str, Version | None]] = []
    for event in raw:
        if not isinstance(event, dict) or len(event) != 1 or next(iter(event)) not in _EVENT_KINDS:
            raise AuditInputError(path, f"{package}: bad range event {event!r}")
        kind, value = next(iter(event.items()))
        if kind == "introduced" and value == "0":
            events.append((kind, None))
        else:
            events.append((kind, _version(value, f"{package}: {kind} version", path)))
    return tuple(events)


def load_advisory(path: Path, names: frozenset[str] | None = None) -> Advisory:
    """Parse one OSV JSON record; only PyPI `affected` entries (of `names`, when given) are kept and checked.

    Raises AuditInputError for a file that is not valid OSV as far as the audit reads it: bad JSON, no
    id, wrong types, or a version in a range of one of our packages that is not PEP 440.
    """
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AuditInputError(path, f"not a readable OSV JSON file: {exc}") from exc
    if not isinstance(record, dict):
        raise AuditInputError(path, "an OSV record must be a JSON object")
    advisory_id = record.get("id")
    if not isinstance(advisory_id, str) or not advisory_id:
        raise AuditInputError(path, "the record has no `id`")
    summary = record.get("summary") or record.get("details") or ""
    if not isinstance(summary, str):
        raise AuditInputError(path, "`summary`/`details` must be strings")
    raw_affected = record.get("affected", [])
    if not isinstance(raw_affected, list):
        raise AuditInputError(path, "`affected` must be a list")
    affected: list[Affected] = []
    for entry in raw_affected:
        package = entry.get("package") if isinstance(entry, dict) else None
        if not isinstance(package, dict) or not isinstance(package.get("name"), str) \
                or not isinstance(package.get("ecosystem"), str):
            raise AuditInputError(path, "every `affected` entry needs package.ecosystem and package.name")
        assert isinstance(entry, dict)
        if package["ecosystem"] != ECOSYSTEM:
            continue
        name = canonicalize_name(package["name"])
        if names is not None and name not in names:
            continue
        raw_ranges = entry.get("ranges", [])
        if not isinstance(raw_ranges, list):
            raise AuditInputError(path, f"{name}: `ranges` must be a list")
        ranges = []
        for rng in raw_ranges:
            if not isinstance(rng, dict) or not isinstance(rng.get("type"), str):
                raise AuditInputError(path, f"{name}: every range needs a `type`")
            if rng["type"] in _VERSION_RANGES:
                ranges.append(_events(rng.get("events"), name, path))
        versions = frozenset(_strings(entry.get("versions"), f"{name}: `versions`", path))
        affected.append(Affected(name, tuple(ranges), versions))
    return Advisory(
        id=advisory_id,
        aliases=_strings(record.get("aliases"), "`aliases`", path),
        summary=summary.strip().splitlines()[0] if summary.strip() else "",
        path=path,
        affected=tuple(affected),
        withdrawn=bool(record.get("withdrawn")),
    )


def load_advisories(directory: Path, names: frozenset[str] | None = None) -> list[Advisory]:
    """Every `*.json` OSV record under `directory` (recursively), withdrawn ones included (flagged).

    `names` (canonical package names) restricts the version checks to our packages, so a full database
    with an odd record for a package we do not use still audits; the JSON of every file is still read.
    """
    if not directory.is_dir():
        raise AuditInputError(directory, "advisory directory not found")
    advisories = [load_advisory(path, names) for path in sorted(directory.rglob("*.json"))]
    if not advisories:
        raise AuditInputError(directory, "no OSV *.json advisory in this directory")
    return advisories


# ------------------------------------------------------------------------------------- evaluation


def _affected_by_range(version: Version, events: Sequence[tuple[str, Version | None]]) -> tuple[bool, list[str]]:
    """OSV range evaluation: walk the events sorted by version; introduced switches `affected` on at
    versions >= it, fixed / limit switch it off at versions >= it, last_affected at versions > it.
    Returns (affected, the fixed versions above `version` in this range)."""
    ordered = sorted(events, key=lambda event: (0, _ZERO) if event[1] is None else (1, event[1]))
    affected = False
    for kind, bound in ordered:
        if kind == "introduced":
            if bound is None or version >= bound:
                affected = True
        elif bound is not None and (version > bound if kind == "last_affected" else version >= bound):
            affected = False  # fixed / limit at versions >= bound, last_affected above it
    fixed = [str(bound) for kind, bound in ordered if kind == "fixed" and bound is not None and bound > version]
    return affected, fixed[:1]


def _in_versions(version: Version, listed: frozenset[str]) -> bool:
    """True when an explicit `versions` entry names `version` (PEP 440 equality; odd strings by text)."""
    for text in listed:
        try:
            if Version(text) == version:
                return True
        except InvalidVersion:
            if text == str(version):
                return True
    return False


def _match(pin: Pin, advisory: Advisory) -> list[str] | None:
    """The fixed versions to offer when `advisory` affects `pin`, or None when it does not."""
    hit = False
    fixed: set[str] = set()
    for entry in advisory.affected:
        if entry.name != pin.name:
            continue
        entry_hit = False
        for events in entry.ranges:
            in_range, range_fixed = _affected_by_range(pin.version, events)
            if in_range:
                entry_hit = True
                fixed.update(range_fixed)
        if entry_hit or _in_versions(pin.version, entry.versions):
            hit = True
            if not entry_hit:  # listed only: offer the range fixes above our version, if any
                for events in entry.ranges:
                    fixed.update(_affected_by_range(pin.version, events)[1])
    return sorted(fixed, key=Version) if hit else None


def audit(pins: Sequence[Pin], advisories: Sequence[Advisory], ignores: Sequence[IgnoreEntry],
          today: dt.date) -> list[Finding]:
    """Every (pin, vulnerability) finding, sorted by package and id.

    Advisories of one vulnerability from several databases (their ids and aliases overlap) make one
    finding; an ignore entry applies when its id is any of those ids or aliases, and stops applying
    after its review date.
    """
    by_id = {entry.id: entry for entry in ignores}
    findings: list[Finding] = []
    for pin in pins:
        mine: list[Finding] = []
        for advisory in sorted(advisories, key=lambda a: a.id):
            if advisory.withdrawn:
                continue
            fixed = _match(pin, advisory)
            if fixed is None:
                continue
            names = {advisory.id, *advisory.aliases}
            same = next((f for f in mine if f.ids & names or f.aliases & names), None)
            if same is None:
                mine.append(Finding(pin, advisory.id, {advisory.id}, fixed, aliases=set(advisory.aliases)))
            else:
                same.ids.add(advisory.id)
                same.aliases.update(advisory.aliases)
                same.fixed = sorted(set(same.fixed) | set(fixed), key=Version)
        for finding in mine:
            entry = next((by_id[i] for i in sorted(finding.ids | finding.aliases) if i in by_id), None)
            if entry is not None:
                finding.ignore = entry
                finding.expired = entry.review < today
        findings.extend(mine)
    return sorted(findings, key=lambda f: (f.pin.name, str(f.pin.version), f.id))


# ----------------------------------------------------------------------------------------- ignores


def read_ignore(path: Path, required: bool = False) -> list[IgnoreEntry]:
    """The allow-list: TOML `[[ignore]]` tables with `id`, `reason` and `review` (a date) and nothing else.

    A missing file is an empty list unless `required` (the user named it with --ignore).
    """
    if not path.exists() and not required:
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AuditInputError(path, f"not a readable TOML ignore file: {exc}") from exc
    unknown = set(data) - {"ignore"}
    if unknown:
        raise AuditInputError(path, f"unknown top-level keys {sorted(unknown)}; use [[ignore]] tables")
    raw = data.get("ignore", [])
    if not isinstance(raw, list):
        raise AuditInputError(path, "`ignore` must be an array of tables ([[ignore]])")
    entries: list[IgnoreEntry] = []
    for number, item in enumerate(raw, start=1):
        where = f"[[ignore]] #{number}"
        if not isinstance(item, dict) or set(item) != {"id", "reason", "review"}:
            keys = sorted(item) if isinstance(item, dict) else item
            raise AuditInputError(path, f"{where} needs exactly id, reason and review (got {keys})")
        advisory_id, reason, review = item["id"], item["reason"], item["review"]
        if not isinstance(advisory_id, str) or not advisory_id.strip():
            raise AuditInputError(path, f"{where}: `id` must be a non-empty string")
        if not isinstance(reason, str) or not reason.strip():
            raise AuditInputError(path, f"{where} ({advisory_id}): `reason` must say why it does not apply")
        if isinstance(review, str):
            try:
                review = dt.date.fromisoformat(review)
            except ValueError as exc:
                raise AuditInputError(path, f"{where} ({advisory_id}): `review`: {exc}") from exc
        if not isinstance(review, dt.date) or isinstance(review, dt.datetime):
            raise AuditInputError(path, f"{where} ({advisory_id}): `review` must be a date (YYYY-MM-DD)")
        entries.append(IgnoreEntry(advisory_id.strip(), " ".join(reason.split()), review))
    ids = [entry.id for entry in entries]
    if len(set(ids)) != len(ids):
        raise AuditInputError(path, f"duplicate ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    return entries


def database_source(directory: Path) -> tuple[dt.date | None, frozenset[str] | None]:
    """What refresh.py recorded in `directory`/SOURCE.md: the source commit date and the package names
    covered; (None, None) for a database without it (e.g. a full OSV dump, which covers every package)."""
    try:
        text = (directory / "SOURCE.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None, None
    match = re.search(r"^- Source commit date: (\d{4}-\d{2}-\d{2})", text, re.MULTILINE)
    date = dt.date.fromisoformat(match.group(1)) if match else None
    covered = None
    if "\n## Packages covered\n" in text:
        section = text.split("\n## Packages covered\n", 1)[1]
        covered = frozenset(line[2:].strip() for line in section.splitlines() if line.startswith("- "))
    return date, covered


# --------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audit.py",
        description="Audit requirements.lock against OSV advisories, offline. "
                    "Exit 0: no unignored finding; 1: findings; 2: a bad input file.",
    )
    parser.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help="requirements lock (default: %(default)s)")
    parser.add_argument("--advisories", type=Path, default=DEFAULT_ADVISORIES,
                        help="directory of OSV JSON advisories, searched recursively (default: the vendored subset)")
    parser.add_argument("--ignore", type=Path, default=None,
                        help=f"allow-list TOML file (default: {DEFAULT_IGNORE}, if present)")
    parser.add_argument("--today", type=dt.date.fromisoformat, default=None,
                        help="date the ignore entries' review dates are compared with (default: today, UTC)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log which files are read")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the audit; print the findings and a summary; return the exit status (0, 1 or 2)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    today = args.today or dt.datetime.now(dt.UTC).date()
    out = sys.stdout
    try:
        pins = read_lock(args.lock)
        advisories = load_advisories(args.advisories, frozenset(pin.name for pin in pins))
        ignores = read_ignore(args.ignore or DEFAULT_IGNORE, required=args.ignore is not None)
    except AuditInputError as exc:
        sys.stderr.write(f"audit: error: {exc}\n")
        return 2
    logger.debug("%d pins from %s, %d advisories from %s", len(pins), args.lock, len(advisories), args.advisories)
    findings = audit(pins, advisories, ignores, today)
    for finding in findings:
        out.write(finding.line() + "\n")
    used = {finding.ignore.id for finding in findings if finding.ignore is not None}
    for entry in ignores:
        if entry.id not in used:
            sys.stderr.write(f"audit: note: ignore entry {entry.id} matches no finding: remove it\n")
    failing = sum(finding.counts for finding in findings)
    withdrawn = sum(advisory.withdrawn for advisory in advisories)
    as_of, covered = database_source(args.advisories)
    if as_of is not None and (today - as_of).days > STALE_AFTER_DAYS:
        sys.stderr.write(f"audit: note: the advisory database is from {as_of} ({(today - as_of).days} days old):"
                         " refresh it with deploy/audit/refresh.py\n")
    missing = sorted({pin.name for pin in pins} - covered) if covered is not None else []
    if missing:
        sys.stderr.write(f"audit: note: {len(missing)} locked package(s) not covered by the advisory database,"
                         f" refresh it with deploy/audit/refresh.py: {', '.join(missing)}\n")
    out.write(f"audit: {len(pins)} pins, {len(advisories) - withdrawn} advisories from {args.advisories}"
              f"{f' as of {as_of}' if as_of else ''} ({withdrawn} withdrawn skipped):"
              f" {failing} finding(s), {len(findings) - failing} ignored\n")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
