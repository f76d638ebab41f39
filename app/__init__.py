"""modelmon: production model monitoring."""

__version__ = "0.1.0"
