"""The fxprune version (one place: the package and saved files read it)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
