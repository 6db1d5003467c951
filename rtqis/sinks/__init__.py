"""Storage: the Kafka topics into one DuckDB file, and everything that reads or fills it.

- :mod:`~rtqis.sinks.schema`: tables, keys, conflict rules, migrations.
- :mod:`~rtqis.sinks.rows`: inputs of a write (models, frames, DataFrames) -> rows typed like their table.
- :mod:`~rtqis.sinks.store`: :class:`~rtqis.sinks.store.Store`, the one read-write connection: writes, reads.
- :mod:`~rtqis.sinks.marks`: the tick archive's per-symbol high-water marks (de-duplication, plausibility).
- :mod:`~rtqis.sinks.readers` / :mod:`~rtqis.sinks.serve`: readers query the running sink over a local
  socket (:class:`~rtqis.sinks.readers.HistoryReader` is the seam); no sink: the file read-only.
- :mod:`~rtqis.sinks.retention`: per-kind retention and disk use, applied by the running sink.
- :mod:`~rtqis.sinks.snapshot`: a consistent copy of the live file (a backup while the sink writes).
- :mod:`~rtqis.sinks.candle_files`: candles CSV import, CSV / Parquet export.
- :mod:`~rtqis.sinks.sink`: ``rtqis sink``, the consumer that validates and writes, effectively once.
- :mod:`~rtqis.sinks.history`: reads, imports and back-fill while the sink may be running.
"""
