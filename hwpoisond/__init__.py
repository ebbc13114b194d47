"""hwpoisond: watches a Linux server's memory for hardware errors and retires failing pages."""

__version__ = "0.1.0"
