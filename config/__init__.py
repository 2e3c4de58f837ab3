"""Settings schema, shipped YAML, constants and the exception tree: imported by every layer."""

from core.errors import ConfigError
from config.settings import Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
