"""``detector bench``: the numbers a user needs before deploying the detector.

Every speed figure is a ratio against a baseline measured in the same run on the same input (bare
file reading for a replay, kafka-python's bare consumer for the worker, a naive per-record detector
for the design), because the machines this runs on are noisy and absolute rates mean little
alone. Generated inputs are cached (``data``), each measurement runs in a fresh process
(``child``), and the sections are ``replay``, ``memory``, ``quality`` (with the naive detector),
``kafka`` and ``formats`` (the log-format adapters against the bare read of their files);
``harness.run_bench`` runs them and ``table.format_report`` prints the result.
"""
