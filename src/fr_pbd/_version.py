"""fr-pbd's version, in a module of its own so that every layer can name it without importing the public API."""

__version__ = "0.1.0"
