from alembic import context

from trainyard.jobrunner.models import Base
from trainyard.runtime.db import run_migrations

run_migrations(context, Base.metadata)
