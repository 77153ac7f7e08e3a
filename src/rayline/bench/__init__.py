"""Benchmarks that run rayline's own stages on a cluster (``rayline bench ...``).

* :mod:`rayline.bench.scaling` -- training throughput and scaling efficiency at several
  worker counts, with each step split into data wait and compute.
"""
