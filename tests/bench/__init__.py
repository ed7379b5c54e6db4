"""Benchmarks of rnncli against PyTorch: speed (run_bench) and model quality (quality).

Not collected by the test suite; they need torch (`pip install -e .[bench]`). The suite's
``tests/test_torch_parity.py`` imports ``torch_models`` when torch is installed.
"""
