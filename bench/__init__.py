"""Benchmarks for hwpoisond: each is a script under bench/ run by `python -m bench NAME`.

Rule: benchmarks measure and report; they are never imported by the daemon or its tests' timing.
"""
