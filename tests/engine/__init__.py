"""Tests of models/engine: the fill-mask engine and its accelerations."""
