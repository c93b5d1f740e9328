"""Serving the engine: the micro-batcher, the HTTP worker, Ray Serve, and the client the bot uses."""
