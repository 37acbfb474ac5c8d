"""skillfs: agent skill memory as plain files."""

__version__ = "0.1.0"
