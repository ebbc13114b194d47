"""The simulator: a simulated server kernel (`kernel`) and the fault scenarios played on it
(`scenarios`). Rule: simulation only, never the live machine; `commands/simulate.py` is the
thin command that runs the real daemon against it."""
