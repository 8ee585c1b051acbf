from alembic import context

from trainyard.orchestrator.models import Base
from trainyard.runtime.db import run_migrations

run_migrations(context, Base.metadata)
