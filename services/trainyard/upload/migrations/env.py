from alembic import context

from trainyard.runtime.db import run_migrations
from trainyard.upload.models import Base

run_migrations(context, Base.metadata)
