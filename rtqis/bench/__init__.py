"""``rtqis bench``: figures anyone can reproduce, printed as a table and written as JSON.

Sections (each runs on the embedded broker, or the configured one, in its own namespace):
- codec: encode + decode cost of a trade frame, JSON vs Avro (:mod:`rtqis.bench.micro`);
- kernels: per-update cost of each incremental analytic (:mod:`rtqis.bench.micro`);
- raw: confluent-kafka consume rate of the tick frames, the ceiling (:mod:`rtqis.bench.raw`);
- e2e: ticks through producer -> worker -> sink (:mod:`rtqis.bench.e2e`);
- scaling: e2e with 1 vs 100 pairs, 1 vs 4 partitions, 1 vs 2 workers (:mod:`rtqis.bench.e2e`);
- scale (opt-in): 1 vs 2 workers on 4 partitions, 20 symbols / 10 pairs and 100 pairs, CPU time per
  process (producer, broker, workers, sink) and the ceiling on this machine's cores (:mod:`rtqis.bench.scale`);
- latency: a steady live-like feed; latency per hop, produce -> consume up to the pair signal
  (:mod:`rtqis.bench.latency`);
- shapes (opt-in): Faust worker throughput with one tick per message vs frames of 50/500/5000 ticks,
  with and without the exact-recovery fix (:mod:`rtqis.bench.shapes`);
- soak (opt-in): worker, sink and broker RSS under the steady feed (:mod:`rtqis.bench.soak`);
- replay (opt-in): ``rtqis replay`` of --ticks synthetic trades written as Binance trade files, median
  of --runs, with the raw consumer ceiling in the same run (:mod:`rtqis.bench.replay`);
- signals (opt-in, no broker): the issue #20 evaluation of the pair signals on the seeded synthetic
  market, figure against target (:mod:`rtqis.bench.signals`, :mod:`rtqis.evaluation`), a few minutes;
- day (opt-in, no broker): a simulated day (or week) of live-like data at 250 ticks/s of event time
  through the sink's storage path, figures at simulated hours 1, 6, 12, 24 (:mod:`rtqis.bench.day`);
- workerday (opt-in, own Apache Kafka): a real ``rtqis worker`` fed a simulated day of trades at max speed,
  its RSS, CPU seconds and the broker's disk at simulated hours 1, 6, 12, 24 (:mod:`rtqis.bench.workerday`).

:func:`rtqis.bench.runner.run_bench` runs the chosen sections; :mod:`rtqis.bench.report` holds the
recorded versions and the closing table. Child processes (worker, sink, feed) are started and
stopped with :mod:`rtqis.process`, as `rtqis up` does. Benchmarks are not tests: nothing here
asserts a time.

This module stays import-light (the CLI reads the section names when it builds its parser).
"""

from __future__ import annotations

__all__ = ["ALL_SECTIONS", "BROKER_SECTIONS", "DEFAULT_SECTIONS", "OPTIONAL_SECTIONS"]

#: the sections `rtqis bench` runs without ``--only`` (whatever the order given, they run in run_bench's order)
DEFAULT_SECTIONS: tuple[str, ...] = ("codec", "kernels", "raw", "e2e", "scaling", "latency")
#: sections run only when named in ``--only``
OPTIONAL_SECTIONS: tuple[str, ...] = ("shapes", "soak", "signals", "replay", "day", "workerday", "scale")
ALL_SECTIONS: tuple[str, ...] = DEFAULT_SECTIONS + OPTIONAL_SECTIONS
#: the sections that need the run's broker (`rtqis bench --only signals` starts none; workerday starts its own
#: Apache Kafka)
BROKER_SECTIONS: tuple[str, ...] = ("raw", "e2e", "scaling", "latency", "shapes", "soak", "replay", "scale")
