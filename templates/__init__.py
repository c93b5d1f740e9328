"""Everything the bot says, as Jinja2 templates (see ``bot/text/render.py``).

A package only so that the templates travel inside the wheel as package data and are found with
``importlib.resources`` / ``jinja2.PackageLoader`` wherever the project is installed."""
