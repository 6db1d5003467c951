"""The app script ``panel serve`` runs once per browser session (URL ``/dashboard``)."""

import panel as pn

from rtqis.ui import runtime
from rtqis.ui.hub import get_hub
from rtqis.ui.page import Dashboard

pn.extension(notifications=True)
settings = runtime.settings()
Dashboard(settings, get_hub(settings)).servable()
