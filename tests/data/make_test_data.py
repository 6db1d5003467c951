"""Regenerate ``tests/data/binance/`` from a copy of the project's shared real data.

Usage (from the repository root; SOURCE is the folder that holds ``binance/``, e.g. ``../shared/data``)::

    python tests/data/make_test_data.py SOURCE

Every output is real data, cut with the rules below (times are the captures' local receive times, UTC),
and written deterministically (gzip level 9, no name, mtime 0), so a second run gives the same bytes.
``tests/data/README.md`` says which test uses which file. Only the Python standard library is used.
"""

from __future__ import annotations

import bisect
import gzip
import json
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["main"]

OUT = Path(__file__).resolve().parent / "binance"

MS = 1_000_000  # ns per ms
MIDNIGHT = 1_723_161_600_000  # 2024-08-09 00:00:00 UTC, ms

# Depth diffs kept up to these receive times (ms); the other streams of a capture are kept whole or cut
# at the same time, see CAPTURES.
SPOT_BTC_DEPTH_END = MIDNIGHT + 70_000  # 00:01:10, past the 2 known bookTicker/depth disagreements (00:01:05)
SPOT_ETH_DEPTH_END = MIDNIGHT - 210_000  # 23:56:30
USDM_ETH_END = MIDNIGHT - 285_000  # 23:55:15
USDM_BTC_END = MIDNIGHT - 225_000  # 23:56:15 (test_real_top20 replays 2,000 diffs)
CM_END = MIDNIGHT - 300_000  # 23:55:00

# Plain copies (the tests read them with the csv module / np.loadtxt as well as with our readers).
COPY = [
    "trades/BTCUSDT-spot-trades-2024-08-08T235415_to_2024-08-09T000505.csv",
    "trades/ETHUSDT-spot-trades-2024-08-08T235415_to_2024-08-09T000505.csv",
    "klines/ETHUSDT-UM-1m-2024-08-08T2353_2024-08-09T0006.excerpt.csv",
]
# Whole files, gzip-compressed (our readers and np.loadtxt / polars read .gz).
GZIP = [
    "trades/ETHUSDT-um-trades-2024-08-08T235416_to_2024-08-09T000000.csv",
    "trades/ETHUSD_PERP-cm-trades-2024-08-08T235418_to_2024-08-09T000504.csv",
    "bookticker/BTCUSDT-spot-bookTicker-2024-08-08_2024-08-09.csv",
    "bookticker/ETHUSDT-spot-bookTicker-2024-08-08_2024-08-09.csv",
]


def _kind(line: bytes) -> str:
    """'trade', 'bookTicker', 'depth' or 'rest' (the REST depth snapshot) for one capture line."""
    js = line.split(b" ", 1)[1]
    if not js.startswith(b'{"stream"'):
        return "rest"
    head = js[:60]
    for k in ("bookTicker", "depth", "trade"):
        if b"@" + k.encode() in head:
            return k
    raise ValueError(f"unknown stream in {head!r}")


def _recv_ms(line: bytes) -> int:
    return int(line.split(b" ", 1)[0]) // MS


def _update_id(line: bytes) -> int:
    """The (final) order-book update id ``u`` of a bookTicker or depth line."""
    return int(json.loads(line.split(b" ", 1)[1])["data"]["u"])


def _read(path: Path) -> list[bytes]:
    with gzip.open(path, "rb") as f:
        return f.readlines()


def _write_gz(path: Path, data: Iterable[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as f:
        for chunk in data:
            f.write(chunk)


def _depth_until(end_ms: int) -> Callable[[bytes], bool]:
    """Keep every trade, bookTicker and snapshot line; depth diffs only if received before ``end_ms``."""
    return lambda line: _kind(line) != "depth" or _recv_ms(line) < end_ms


def _all_until(end_ms: int) -> Callable[[bytes], bool]:
    """Keep every line received before ``end_ms`` (a time-span cut of the whole capture)."""
    return lambda line: _recv_ms(line) < end_ms


def _book_only(lines: list[bytes], end_ms: int) -> list[bytes]:
    """The snapshot, the depth diffs before ``end_ms`` and, per diff, the latest bookTicker it is checked
    against (largest update id <= the diff's final id ``u``); trades dropped. Exactly what
    ``tests/test_orderbook.py`` reads, with the same checkpoints as on the whole capture."""
    kept = [ln for ln in lines if _recv_ms(ln) < end_ms and _kind(ln) != "trade"]
    finals = [_update_id(ln) for ln in kept if _kind(ln) == "depth"]
    bt = sorted((_update_id(ln), i) for i, ln in enumerate(kept) if _kind(ln) == "bookTicker")
    ids = [u for u, _ in bt]
    need = set()
    for u in finals:
        j = bisect.bisect_right(ids, u) - 1
        if j >= 0:
            need.add(bt[j][1])
    return [ln for i, ln in enumerate(kept) if _kind(ln) != "bookTicker" or i in need]


def _captures(src: Path) -> None:
    raw = src / "streams_raw"
    out = OUT / "streams_raw"
    for sym, end in (("btcusdt", SPOT_BTC_DEPTH_END), ("ethusdt", SPOT_ETH_DEPTH_END)):
        for day in ("20240808", "20240809"):
            name = f"spot_{sym}_{day}.gz"
            _write_gz(out / name, filter(_depth_until(end), _read(raw / name)))
    name = "usdm_ethusdt_20240808.gz"
    _write_gz(out / name, filter(_all_until(USDM_ETH_END), _read(raw / name)))
    name = "usdm_btcusdt_20240808.gz"
    _write_gz(out / name, _book_only(_read(raw / name), USDM_BTC_END))
    name = "cm_ethusd_perp_20240808.gz"
    _write_gz(out / name, _book_only(_read(raw / name), CM_END))
    name = "cm_btcusd_perp_20240808.gz"  # for format detection only: its first 20 lines
    _write_gz(out / name, _read(raw / name)[:20])


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not (Path(argv[1]) / "binance").is_dir():
        sys.stderr.write(__doc__ or "")
        return 2
    src = Path(argv[1]) / "binance"
    if OUT.exists():
        shutil.rmtree(OUT)
    for rel in COPY:
        (OUT / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, OUT / rel)
    for rel in GZIP:
        _write_gz(OUT / (rel + ".gz"), [(src / rel).read_bytes()])
    _captures(src)
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            sys.stdout.write(f"{p.stat().st_size:>10,}  {p.relative_to(OUT.parent)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
