"""The benchmark (`mlm-bot bench`) and the random-weight models that tests and benchmarks build."""
