"""eval: labelled sets, metrics, calibration, reports, benchmarks."""
