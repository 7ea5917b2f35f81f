"""Developer benchmarks and cost-model measurements (not installed with the package; run from the repository
root as `python -m benchmarks.<name>`, see README.md here)."""
