"""Benchmarks and reports: params and MACs (``bench.profile``), latency and memory suites,
reports against the papers' efficiency tables, and the end-to-end demo (``bench.demo``).
May use ``train``, ``export`` and ``runtime``."""
