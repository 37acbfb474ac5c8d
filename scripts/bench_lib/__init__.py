"""Benchmark harness for skillfs: corpus, systems under test, figures, report.

Nothing here imports skillfs: the daemon is driven through its CLI only, so the
harness measures what a user would run.
"""
