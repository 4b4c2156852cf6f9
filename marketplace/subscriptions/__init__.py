"""Buyer qualification, subscriptions and entitlements."""
