"""textflow-django: verify phone numbers by SMS and send bulk SMS through TextFlow."""

__version__ = "0.1.0.dev0"
__all__ = ["__version__"]
