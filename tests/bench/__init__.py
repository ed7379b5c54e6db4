"""Benchmarks of rnncli against PyTorch: speed (run_bench) and model quality (quality).

Not part of the test suite; they need torch (`pip install -e .[bench]`).
"""
