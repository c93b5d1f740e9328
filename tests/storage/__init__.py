"""Tests of bot/storage: the database, the repository, the background writer."""
