"""Shared foundation: settings, database, identity, errors and tasks. Imports nothing else of ours."""
