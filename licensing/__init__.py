"""Licensing: the owner's domain. Departments and data resources with their grades and contents,
franchise licences and their lifecycle, and listing review with automated privacy checks.

Every change is published as a domain event (``marketplace.core.events.publish``) in the transaction
of the change: the ledger records it, and other domains (the catalog) react to licence suspension
and revocation through the same hook.
"""
