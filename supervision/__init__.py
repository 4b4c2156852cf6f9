"""Supervision: the verifiable ledger, proofs, engagements, alerts, findings and reports."""
