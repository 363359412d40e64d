"""The ``laueflow`` command line (nothing else in the package imports this)."""
