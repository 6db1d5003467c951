"""The Faust application and its agents. Build it with :func:`rtqis.agents.app.create_app`."""
