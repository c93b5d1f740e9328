"""Tests of bot: the Telegram side, end to end against the fake Bot API."""
