"""The Faust worker: :func:`rtqis.agents.app.create_app` builds its whole graph (every topic, table, agent).

- ``app``: the graph, in one function;
- ``handlers``: what each agent does with one event (decode, validate, apply, publish);
- ``books``: the agents' logic, pure (candles and leg samples per symbol, signals per pair);
- ``outbox``: outputs kept in the table state until delivered (effectively once across crashes);
- ``outputs``: the output producer and the dead letters;
- ``config``, ``security``: the Faust configuration and the broker credentials;
- ``patches``: the changes RT-QIS makes to Faust, each with the reason;
- ``worker``: the process (the app's stop state, the crash-only stop).
"""
