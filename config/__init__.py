"""The one place configuration is read: environment variables and an optional `.env` file.

Everything else receives a `Settings` object; nothing else reads `os.environ`.
"""

from config.settings import BillingSettings, ConfigError, Settings, StorageSettings, load_settings

__all__ = ["BillingSettings", "ConfigError", "Settings", "StorageSettings", "load_settings"]
