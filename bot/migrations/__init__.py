"""Alembic migrations of the interaction log (``script_location = bot:migrations``), shipped in the wheel."""
