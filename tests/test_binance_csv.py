"""Binance archive CSV rows: each layout parsed, recognised by header and by first row, bad rows explained."""

from __future__ import annotations

from typing import Any

import pytest

from rtqis.producers import binance_csv as bc
from rtqis.producers.binance_format import BadMessage


@pytest.mark.parametrize(
    ("row", "layout", "expected"),
    [
        (
            "3735683259,61837.63000000,0.02000000,1236.75260000,1723161255342,True,True",
            bc.SPOT_TRADES,
            (3735683259, 61837.63, 0.02, 1723161255342, True),
        ),
        (
            "5266583935,61800.30,0.006,370.8018,1723161256322,false",
            bc.UM_TRADES,
            (5266583935, 61800.3, 0.006, 1723161256322, False),
        ),
        ("849714402,61804.8,4,1723161257679,false", bc.CM_TRADES, (849714402, 61804.8, 4.0, 1723161257679, False)),
        (
            "26129,0.01633102,4.70443515,27781,27781,1498793709153,True,True",
            bc.SPOT_AGGTRADES,
            (26129, 0.01633102, 4.70443515, 1498793709153, True),
        ),
        (
            "26129,0.01633102,4.70443515,27781,27781,1498793709153123,true",
            bc.UM_AGGTRADES,
            (26129, 0.01633102, 4.70443515, 1498793709153, True),
        ),
        (
            "1723161254087891268,50093239212,61837.63000000,3.78826000,61837.64000000,1.54698000",
            bc.BOOKTICKER_SPOT_CAPTURE,
            (50093239212, 61837.63, 3.78826, 61837.64, 1.54698, 1723161254087),
        ),
        (
            "1723161180000,2678.15,2683.80,2677.54,2681.54,1901.349,1723161239999,5096158.28124,2806,1449.276,"
            "3884624.68604,0",
            bc.KLINES,
            (
                1723161180000,
                2678.15,
                2683.8,
                2677.54,
                2681.54,
                1901.349,
                1723161239999,
                5096158.28124,
                2806,
                1449.276,
                3884624.68604,
            ),
        ),
    ],
)
def test_csv_rows(row: str, layout: bc.CsvLayout, expected: tuple[Any, ...]) -> None:
    fields = row.split(",")
    assert bc.parse_csv_row(layout, fields) == expected
    if not layout.header:
        assert bc.layout_for_row(fields) is layout
    assert bc.layout_for_header(list(layout.columns)) is layout


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("1,2,3", "expected 7 fields"),
        ("1,abc,0.1,1,1723161255342,True,True", "price is not a number"),
        ("1,0,0.1,1,1723161255342,True,True", "price <= 0"),
        ("1,1,nan,1,1723161255342,True,True", "qty is not a finite number"),
        ("1,1,1,1,17231612553.5,True,True", "time is not an integer"),
        ("1,1,1,1,1723161255342,yes,True", "isBuyerMaker is not true/false"),
    ],
)
def test_bad_csv_rows(row: str, reason: str) -> None:
    with pytest.raises(BadMessage, match=reason):
        bc.parse_csv_row(bc.SPOT_TRADES, row.split(","))


def test_crossed_csv_book() -> None:
    with pytest.raises(BadMessage, match="crossed book"):
        bc.parse_csv_row(bc.BOOKTICKER_SPOT_CAPTURE, ["1723161254087891268", "1", "10", "1", "9", "1"])
