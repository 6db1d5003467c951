"""``panel serve --setup`` script: start the process's single Kafka consumer before the first session."""

from rtqis.ui import runtime
from rtqis.ui.hub import get_hub

get_hub(runtime.settings())
