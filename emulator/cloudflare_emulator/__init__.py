"""A local, stateful emulator of the Cloudflare v4 API for tests and the lab."""

__version__ = "0.1.0"
