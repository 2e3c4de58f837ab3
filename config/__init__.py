"""Settings schema, shipped YAML, constants and the exception tree: imported by every layer."""

from config.settings import Settings, load_settings
from core.errors import ConfigError

__all__ = ["ConfigError", "Settings", "load_settings"]
