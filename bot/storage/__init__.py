"""The interaction log: SQLAlchemy 2 (async), SQLite by default, schema owned by Alembic migrations."""

from bot.storage.database import Database
from bot.storage.repository import Repository

__all__ = ["Database", "Repository"]
