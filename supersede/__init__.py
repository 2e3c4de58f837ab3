"""The application shell: the ``supersede`` command line and the tiny model zoo."""

__version__ = "0.1.0"
