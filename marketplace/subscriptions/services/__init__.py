"""Subscriptions services: buyer qualification, the data use agreement, subscriptions with their entitlements,
proofs of reduced purposes, and the operator console's reads. The only place that writes these tables.
"""

from __future__ import annotations

from marketplace.subscriptions.services.agreement import (
    AGREEMENT_VERSIONS,
    Agreement,
    current_agreement,
    require_current_agreement,
)
from marketplace.subscriptions.services.proofs import ProofFile, ProofTooLarge, proof_kind, read_proof, upload_proof
from marketplace.subscriptions.services.qualifications import (
    decide_qualification,
    get_qualification,
    list_qualifications,
    normalise_credit_code,
    qualification_status,
    submit_qualification,
)
from marketplace.subscriptions.services.reports import (
    ContractedRevenue,
    ProductRevenue,
    ProductSubscribers,
    contracted_revenue_by_month,
    counterpart_buyers,
    products_by_id,
    subscribers_by_product,
)
from marketplace.subscriptions.services.subscriptions import (
    SubscriptionRecord,
    activate_subscription,
    cancel_subscription,
    create_subscription,
    decide_subscription,
    delivered_fields,
    entitlement_of,
    expire_due_subscriptions,
    get_subscription,
    list_subscriptions,
    proof_required,
    revoke_subscription,
    scoped_subscriptions,
)

__all__ = [
    "AGREEMENT_VERSIONS",
    "Agreement",
    "ContractedRevenue",
    "ProductRevenue",
    "ProductSubscribers",
    "ProofFile",
    "ProofTooLarge",
    "SubscriptionRecord",
    "activate_subscription",
    "cancel_subscription",
    "contracted_revenue_by_month",
    "counterpart_buyers",
    "create_subscription",
    "current_agreement",
    "decide_qualification",
    "decide_subscription",
    "delivered_fields",
    "entitlement_of",
    "expire_due_subscriptions",
    "get_qualification",
    "get_subscription",
    "list_qualifications",
    "list_subscriptions",
    "normalise_credit_code",
    "products_by_id",
    "proof_kind",
    "proof_required",
    "qualification_status",
    "read_proof",
    "require_current_agreement",
    "revoke_subscription",
    "scoped_subscriptions",
    "submit_qualification",
    "subscribers_by_product",
    "upload_proof",
]
