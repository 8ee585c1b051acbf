"""Shared runtime of every Trainyard service: settings, logging, errors, auth, server, database."""
