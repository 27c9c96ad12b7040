"""The package version, in a module of its own so that reading it imports nothing else
(setup.cfg, `oct-seg --version`, the export sidecar)."""
__version__ = "0.1.0"
