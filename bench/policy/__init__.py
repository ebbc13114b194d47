"""Policy evaluation: generate seeded faulty-host traces, replay them per policy, score.

Rule: the generator and the scorer share one fault model (`model`) and one truth format
(`truth`); replay is always the real `hwpoisond replay` subprocess.
"""
