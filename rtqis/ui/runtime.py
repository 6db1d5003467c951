"""The settings of the dashboard server process.

``rtqis ui`` builds :class:`~rtqis.settings.Settings` once (arguments > ``RTQIS_*`` > ``rtqis.toml``) and
stores them here before ``panel serve`` runs the app script in the same process; a bare
``panel serve rtqis/ui/dashboard.py`` falls back to loading them the same way.
"""

from __future__ import annotations

import threading

from rtqis.settings import Settings, load_settings

__all__ = ["configure", "settings"]

_settings: Settings | None = None
_lock = threading.Lock()


def configure(s: Settings) -> None:
    global _settings
    with _lock:
        _settings = s


def settings() -> Settings:
    global _settings
    with _lock:
        if _settings is None:
            _settings = load_settings()
        return _settings
