"""Storage: the Kafka topics into one DuckDB file, and everything that reads or fills it.

- :mod:`~rtqis.sinks.schema`: tables, keys, conflict rules, migrations.
- :mod:`~rtqis.sinks.rows`: inputs of a write (models, frames, DataFrames) -> rows typed like their table.
- :mod:`~rtqis.sinks.store`: :class:`~rtqis.sinks.store.Store`, the one read-write connection: writes, reads.
- :mod:`~rtqis.sinks.snapshot`: the read-only snapshots readers open while the sink writes.
- :mod:`~rtqis.sinks.candle_files`: candles CSV import, CSV / Parquet export.
- :mod:`~rtqis.sinks.sink`: ``rtqis sink``, the consumer that validates and writes, effectively once.
- :mod:`~rtqis.sinks.history`: reads, imports and back-fill while the sink may be running.
"""
