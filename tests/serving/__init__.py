"""Tests of models/serving: the batcher, the worker (HTTP and Ray Serve), the client, the benchmark."""
