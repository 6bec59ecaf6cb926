from alembic import context

# The connection is handed over by storage.migrate: migrations run inside the app's own engine,
# so SQLite and PostgreSQL are migrated with exactly the settings the app uses.
connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
