"""Handlers: one small ``async def name(update, context)`` each; they read the update, call a service and
reply. ``bot/app.py`` registers them, in order."""
