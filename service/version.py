"""The service's version: a leaf, so that any module may read it without importing the app."""

__version__ = "0.1.0"
