"""RT-QIS: real-time quantitative intelligence for crypto markets."""

__version__ = "0.1.0"
