"""PhaserLink: print over the Internet by email."""

__version__ = "0.1.0"
