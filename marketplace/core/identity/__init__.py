"""Organisations, users, sign-in sessions and buyers' API clients (OAuth 2.0 client credentials)."""
