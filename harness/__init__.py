"""otransfer harness: training, suites, reports and the CLI."""
