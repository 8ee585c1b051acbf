from alembic import context

from trainyard.runtime.db import run_migrations

run_migrations(context, None)
