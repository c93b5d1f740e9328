"""Helpers the tests share: the fake Bot API, the bot harness, chats, processes, databases, the worker."""
