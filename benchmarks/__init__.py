"""Side-by-side performance measurements (not timed tests); `python -m benchmarks` runs the suite."""
