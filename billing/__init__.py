"""Payments (Stripe and invoice), webhooks, usage billing, refunds and settlement with the owner."""
