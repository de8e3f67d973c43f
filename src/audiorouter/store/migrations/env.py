"""Alembic environment. audiorouter runs migrations programmatically and hands over an open connection
(store/db.py); offline mode (`--sql`) renders SQL for the URL in the config."""
from __future__ import annotations

from alembic import context

from audiorouter.store.models import Base

config = context.config
target_metadata = Base.metadata
VERSION_TABLE = config.get_main_option("version_table") or "ar_alembic_version"


def _configure(**kw) -> None:
    context.configure(target_metadata=target_metadata, version_table=VERSION_TABLE, render_as_batch=True,
                      compare_type=True, **kw)


if context.is_offline_mode():
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `audiorouter db upgrade`, which supplies the connection")
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
