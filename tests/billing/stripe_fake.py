"""A loopback fake of the part of Stripe's HTTP API our billing uses, for tests.

`StripeFake` runs a `ThreadingHTTPServer` on 127.0.0.1 (a free port) and answers `/v1/...` the way Stripe does:
form-encoded requests in Stripe's bracket notation, JSON objects in the shapes of the API version the installed
`stripe` SDK pins (`stripe.api_version`), Stripe's error bodies and status codes (so the SDK raises its real
exception classes), `Idempotency-Key` replays, list pagination, `expand[]`, and events for what happens.

Point the real SDK at it (see `StripeFake.client`)::

    stripe.StripeClient(api_key, base_addresses={"api": fake.base_url, "connect": fake.base_url,
                                                  "files": fake.base_url, "meter_events": fake.base_url})

Plain Python methods play the parts of the buyer and of time: `complete_checkout`, `expire_checkout`,
`renew_subscription`, `fail_renewal`, `advance_clock`. Webhooks: `events`, `webhook_payload`, `sign`, `deliver`.

Shapes follow the pinned API version (2025-03-31.basil and later): a subscription's period is on its items
(`items.data[i].current_period_start/end`), an invoice names its subscription in
`parent.subscription_details.subscription` and its payment intents in `payments` (includable: `expand[]=payments`);
there is no `invoice.subscription`, `invoice.payment_intent` or `subscription.current_period_end`.

Parameters the fake does not model are refused like Stripe refuses a misspelt one (`Received unknown parameter: x`):
when real Stripe accepts a parameter this fake refuses, teach the fake the parameter rather than dropping it.
Written from Stripe's public API reference; error wordings not found there are marked "wording approximate".
"""

from __future__ import annotations

import base64
import calendar
import copy
import hashlib
import hmac
import html
import json
import re
import secrets
import string
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
import stripe

JSON = dict[str, Any]

_ALPHABET = string.ascii_letters + string.digits
_DAY = 86_400
_STRIPE_FEE_RATE = Decimal("0.029")  # Stripe's standard card rate: 2.9 % + 30 minor units
_STRIPE_FEE_FIXED = 30
_METER_BACKDATE_LIMIT = 35 * _DAY  # meter event timestamps: at most 35 days old ...
_METER_FUTURE_LIMIT = 5 * 60  # ... and at most 5 minutes ahead
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "cny": "CN¥", "jpy": "¥"}
_ZERO_DECIMAL = {"jpy", "krw", "vnd", "clp", "pyg", "ugx", "xaf", "xof"}


class _ApiError(Exception):
    """A Stripe error answer: `{"error": {...}}` with its HTTP status."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None, param: str | None = None, kind: str = "invalid_request_error"
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = status, message, code, param, kind

    def body(self) -> JSON:
        error: JSON = {"message": self.message, "type": self.kind}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = f"https://docs.stripe.com/error-codes/{self.code.replace('_', '-')}"
        if self.param:
            error["param"] = self.param
        return {"error": error}


def _missing(param: str) -> _ApiError:
    return _ApiError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def _unknown(param: str) -> _ApiError:
    return _ApiError(400, f"Received unknown parameter: {param}", code="parameter_unknown", param=param)


def _no_such(kind: str, object_id: str, *, param: str = "id", status: int = 404) -> _ApiError:
    return _ApiError(status, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}[{name}]" if prefix else name


# --- request parameters -------------------------------------------------------------------------------------------


def parse_form(encoded: str) -> JSON:
    """Parse a form/query string in Stripe's bracket notation into nested dicts and lists.

    `metadata[plan]=x` -> `{"metadata": {"plan": "x"}}`; `line_items[0][price]=p` and `expand[]=a` -> lists.
    Values stay strings, as on the wire; an empty value (`metadata[plan]=`) is `""`, Stripe's "unset".
    """
    root: JSON = {}
    for key, value in parse_qsl(encoded, keep_blank_values=True):
        match = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", key)
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))] if match else [key]
        node = root
        for part in path[:-1]:
            slot = part if part else str(len(node))
            child = node.get(slot)
            if not isinstance(child, dict):
                child = node[slot] = {}
            node = child
        node[path[-1] if path[-1] else str(len(node))] = value
    result = _listify(root)
    assert isinstance(result, dict)
    return result


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {key: _listify(value) for key, value in node.items()}
    if items and all(key.isdigit() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items


def _allow(params: JSON, allowed: Iterable[str], prefix: str = "") -> None:
    """Refuse parameters outside `allowed` (plus `expand` at the top level) as Stripe does."""
    known = set(allowed) | ({"expand"} if not prefix else set())
    for key in params:
        if key not in known:
            raise _unknown(_join(prefix, key))


def _str(params: JSON, name: str, *, prefix: str = "", required: bool = False) -> str | None:
    full = _join(prefix, name)
    value = params.get(name)
    if value is None:
        if required:
            raise _missing(full)
        return None
    if not isinstance(value, str):
        raise _ApiError(400, f"Invalid string: {json.dumps(value)}", param=full)
    if required and value == "":
        raise _ApiError(
            400,
            f"You passed an empty string for '{full}'. We assume empty values are an attempt to unset a parameter; "
            f"however '{full}' cannot be unset. You should remove '{full}' from your request or supply a non-empty value.",
            code="parameter_invalid_empty",
            param=full,
        )
    return value


def _int(params: JSON, name: str, *, prefix: str = "", required: bool = False, minimum: int | None = None) -> int | None:
    full = _join(prefix, name)
    raw = _str(params, name, prefix=prefix, required=required)
    if raw is None or raw == "":
        return None
    if not re.fullmatch(r"-?\d+", raw):
        raise _ApiError(400, f"Invalid integer: {raw}", code="parameter_invalid_integer", param=full)
    value = int(raw)
    if minimum is not None and value < minimum:
        raise _ApiError(
            400, f"This value must be greater than or equal to {minimum}.", code="parameter_invalid_integer", param=full
        )
    return value


def _bool(params: JSON, name: str, *, prefix: str = "") -> bool | None:
    raw = _str(params, name, prefix=prefix)
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise _ApiError(400, f"Invalid boolean: {raw}", param=_join(prefix, name))
    return raw == "true"


def _enum(params: JSON, name: str, choices: tuple[str, ...], *, prefix: str = "", required: bool = False) -> str | None:
    value = _str(params, name, prefix=prefix, required=required)
    if value is not None and value not in choices:
        listed = ", ".join(choices[:-1]) + f", or {choices[-1]}" if len(choices) > 1 else choices[0]
        raise _ApiError(400, f"Invalid {name}: must be one of {listed}", param=_join(prefix, name))
    return value


def _hash(params: JSON, name: str, *, prefix: str = "", required: bool = False) -> JSON | None:
    full = _join(prefix, name)
    value = params.get(name)
    if value is None:
        if required:
            raise _missing(full)
        return None
    if not isinstance(value, dict):
        raise _ApiError(400, f"Invalid object: {full} must be a hash", param=full)  # wording approximate
    return value


def _list(params: JSON, name: str, *, prefix: str = "") -> list[Any]:
    value = params.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _ApiError(400, f"Invalid array: {_join(prefix, name)} must be an array", param=_join(prefix, name))
    return value


def _metadata(params: JSON, current: dict[str, str] | None = None, *, prefix: str = "") -> dict[str, str]:
    """Stripe's metadata semantics: keys merge; a key set to "" is removed; `metadata=""` clears all."""
    result = dict(current or {})
    value = params.get("metadata")
    if value is None:
        return result
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise _ApiError(400, "Invalid hash", param=_join(prefix, "metadata"))
    for key, item in value.items():
        if not isinstance(item, str):
            raise _ApiError(400, "Invalid hash", param=_join(prefix, f"metadata[{key}]"))
        if item == "":
            result.pop(key, None)
        else:
            result[key] = item
    if len(result) > 50:
        raise _ApiError(400, "Invalid metadata: metadata can only have up to 50 keys", param="metadata")
    return result


def _money(amount: int, currency: str) -> str:
    if currency in _ZERO_DECIMAL:
        text = f"{amount}"
    else:
        text = f"{Decimal(amount) / 100:.2f}"
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{text}" if symbol else f"{text} {currency.upper()}"


def _add_interval(anchor: int, interval: str, count: int) -> int:
    """`anchor` moved by `count` intervals, months clamped to the month's length (Jan 31 + 1 month = Feb 28/29)."""
    if interval == "day":
        return anchor + count * _DAY
    if interval == "week":
        return anchor + count * 7 * _DAY
    months = count * (12 if interval == "year" else 1)
    start = datetime.fromtimestamp(anchor, UTC)
    year, month0 = divmod(start.month - 1 + months, 12)
    year += start.year
    day = min(start.day, calendar.monthrange(year, month0 + 1)[1])
    return int(start.replace(year=year, month=month0 + 1, day=day).timestamp())


# --- the fake -----------------------------------------------------------------------------------------------------


class StripeFake:
    """A Stripe API double on a loopback port: start it, point the SDK at `base_url`, drive it, assert on it.

    `api_key`: when set, the only key accepted; otherwise any `sk_test_...`/`rk_test_...` key is.
    `api_version`: written into events (defaults to the SDK's pinned `stripe.api_version`).
    """

    def __init__(self, *, api_key: str | None = None, api_version: str | None = None) -> None:
        self.api_key = api_key
        self.api_version = api_version or stripe.api_version
        self.base_url = ""
        self.errors: list[str] = []
        """Tracebacks of requests the fake itself failed on (answered 500); a test may assert this is empty."""
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes = self._route_table()
        self.reset()

    # --- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> Self:
        """Serve on 127.0.0.1 on a free port, in a daemon thread; sets `base_url`."""
        if self._server is not None:
            return self
        fake: StripeFake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        host, port = self._server.server_address[:2]
        self.base_url = f"http://{host!s}:{port}"
        # A short poll interval: stop() (shutdown) waits up to one interval.
        poll = {"poll_interval": 0.02}
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs=poll, name="stripe-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def client(self, api_key: str | None = None, **options: Any) -> stripe.StripeClient:
        """A real `stripe.StripeClient` whose every base address is this fake."""
        base = {"api": self.base_url, "connect": self.base_url, "files": self.base_url, "meter_events": self.base_url}
        return stripe.StripeClient(api_key or self.api_key or "sk_test_fake", base_addresses=base, **options)  # type: ignore[arg-type]

    def reset(self) -> None:
        """Forget every object, event, meter event, idempotency key and count (the server keeps running)."""
        with self._lock:
            self._objects: dict[str, JSON] = {}
            self._order: dict[str, int] = {}
            self._seq = 0
            self._created: Counter[str] = Counter()
            self._idempotency: dict[str, tuple[str, str, JSON, int, bytes, str]] = {}
            self._meter_events: list[JSON] = []
            self._session_items: dict[str, list[JSON]] = {}
            self._session_extras: dict[str, JSON] = {}
            self._cycles: dict[str, int] = {}
            self._clock_offset = 0
            self._request: tuple[str | None, str | None] = (None, None)
            self._collected: list[JSON] | None = None
            self.errors.clear()

    # --- control API: what the buyer and time do -----------------------------------------------------------------

    def complete_checkout(self, session_id: str, *, fee: int | None = None) -> list[JSON]:
        """As if the buyer paid the open Checkout Session `session_id`; returns the events this created, oldest first.

        Mode `payment`: a succeeded payment intent and charge (its balance transaction carries `fee`, default
        Stripe's 2.9 % + 30). Mode `subscription`: an active subscription whose first invoice is paid.
        """
        with self._lock, self._collect() as events:
            session = self._control_get("checkout.session", session_id)
            if session["status"] != "open":
                raise ValueError(f"checkout session {session_id} is {session['status']}, not open")
            customer_id = session["customer"]
            email = session["customer_email"] or "buyer@example.com"
            if customer_id is None and (session["mode"] == "subscription" or session["customer_creation"] == "always"):
                customer_id = self._new_customer({"email": email})["id"]
            if customer_id is not None:
                email = self._objects[customer_id]["email"] or email
            extras = self._session_extras[session_id]
            changes: JSON = {"customer": customer_id}
            if session["mode"] == "payment":
                intent = self._pay(
                    customer_id,
                    session["amount_total"],
                    session["currency"],
                    metadata=extras["metadata"],
                    description=extras["description"],
                    fee=fee,
                )
                changes["payment_intent"] = intent["id"]
            else:
                subscription = self._new_subscription(customer_id, self._session_items[session_id], extras, fee=fee)
                changes["subscription"] = subscription["id"]
                changes["invoice"] = subscription["latest_invoice"]
            changes["status"] = "complete"
            changes["payment_status"] = "paid" if session["amount_total"] else "no_payment_required"
            changes["customer_details"] = self._customer_details(email)
            session.update(changes)
            self._emit("checkout.session.completed", session)
        return events

    def expire_checkout(self, session_id: str) -> list[JSON]:
        """As if the open session `session_id` reached `expires_at`; returns the events (checkout.session.expired)."""
        with self._lock, self._collect() as events:
            self._expire(self._control_get("checkout.session", session_id))
        return events

    def renew_subscription(self, subscription_id: str, *, fee: int | None = None) -> list[JSON]:
        """The subscription's period ends and the next begins: a `subscription_cycle` invoice, paid.

        Metered items are billed for the usage (meter events) of the period that ended. A subscription set to
        `cancel_at_period_end` is canceled instead. Returns the events created.
        """
        with self._lock, self._collect() as events:
            self._cycle(self._control_get("subscription", subscription_id), pay=True, fee=fee)
        return events

    def fail_renewal(self, subscription_id: str) -> list[JSON]:
        """Like `renew_subscription`, but the card is declined: the invoice stays open, the subscription is past_due."""
        with self._lock, self._collect() as events:
            self._cycle(self._control_get("subscription", subscription_id), pay=False, fee=None)
        return events

    def advance_clock(self, seconds: int) -> int:
        """Move the fake's clock (object `created`, event `created`, meter windows) forward; returns its new time.

        Webhook signatures (`sign`, `deliver`) keep real time, as the SDK checks them against real time.
        """
        with self._lock:
            self._clock_offset += seconds
            return self._now()

    # --- control API: inspection ----------------------------------------------------------------------------------

    def events(self, type: str | None = None) -> list[JSON]:
        """Events so far, OLDEST first (unlike the API's list), optionally of one `type`; copies."""
        with self._lock:
            found = [obj for obj in self._objects.values() if obj["object"] == "event"]
            return copy.deepcopy([event for event in found if type is None or event["type"] == type])

    def get(self, object_id: str) -> JSON:
        """A copy of any stored object by id (customer, price, invoice, charge, ...); KeyError if unknown."""
        with self._lock:
            return copy.deepcopy(self._objects[object_id])

    def created_count(self, kind: str) -> int:
        """How many objects of `kind` (Stripe's `object` name: "customer", "checkout.session", "event",
        "billing.meter_event", ...) were created; idempotent replays create nothing."""
        with self._lock:
            return self._created[kind]

    def meter_events(self, customer: str | None = None, event_name: str | None = None) -> list[JSON]:
        """Meter events kept (a refused duplicate identifier is not kept), optionally for one customer/event name."""
        with self._lock:
            return copy.deepcopy(
                [
                    event
                    for event in self._meter_events
                    if (customer is None or customer in event["payload"].values())
                    and (event_name is None or event["event_name"] == event_name)
                ]
            )

    def meter_total(self, customer: str, event_name: str) -> Decimal:
        """Sum of `payload[<value key>]` of the meter events for `customer` and `event_name`."""
        with self._lock:
            meter = self._meter_for(event_name)
            value_key = meter["value_settings"]["event_payload_key"] if meter else "value"
            customer_key = meter["customer_mapping"]["event_payload_key"] if meter else "stripe_customer_id"
            return sum(
                (
                    _decimal(event["payload"].get(value_key))
                    for event in self._meter_events
                    if event["event_name"] == event_name and event["payload"].get(customer_key) == customer
                ),
                Decimal(0),
            )

    # --- control API: webhooks ------------------------------------------------------------------------------------

    def webhook_payload(self, event: JSON | str) -> bytes:
        """The JSON body Stripe would POST to a webhook endpoint for `event` (an event or its id)."""
        with self._lock:
            found = self._objects[event] if isinstance(event, str) else event
            return json.dumps(found, indent=2).encode()

    @staticmethod
    def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
        """The `Stripe-Signature` header for `payload`: `t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<payload>">`."""
        stamp = int(time.time()) if timestamp is None else timestamp
        digest = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
        return f"t={stamp},v1={digest}"

    def deliver(self, event: JSON | str, url: str, secret: str, *, timeout: float = 10.0) -> httpx.Response:
        """POST `event` to a webhook `url`, signed with `secret`, as Stripe does; returns the response."""
        payload = self.webhook_payload(event)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Stripe-Signature": self.sign(payload, secret),
        }
        return httpx.post(url, content=payload, headers=headers, timeout=timeout)

    # --- HTTP dispatch --------------------------------------------------------------------------------------------

    def _route_table(self) -> list[tuple[str, re.Pattern[str], Callable[..., JSON]]]:
        table: list[tuple[str, str, Callable[..., JSON]]] = [
            ("POST", r"/v1/customers", self._create_customer),
            ("GET", r"/v1/customers/([^/]+)", self._retriever("customer")),
            ("POST", r"/v1/customers/([^/]+)", self._update_customer),
            ("POST", r"/v1/products", self._create_product),
            ("GET", r"/v1/products/([^/]+)", self._retriever("product")),
            ("POST", r"/v1/products/([^/]+)", self._update_product),
            ("POST", r"/v1/prices", self._create_price),
            ("GET", r"/v1/prices", self._list_prices),
            ("GET", r"/v1/prices/([^/]+)", self._retriever("price")),
            ("POST", r"/v1/prices/([^/]+)", self._update_price),
            ("POST", r"/v1/checkout/sessions", self._create_session),
            ("GET", r"/v1/checkout/sessions/([^/]+)", self._retriever("checkout.session")),
            ("GET", r"/v1/checkout/sessions/([^/]+)/line_items", self._session_line_items),
            ("POST", r"/v1/checkout/sessions/([^/]+)/expire", self._expire_session),
            ("POST", r"/v1/billing/meters", self._create_meter),
            ("GET", r"/v1/billing/meters", self._list_meters),
            ("GET", r"/v1/billing/meters/([^/]+)", self._retriever("billing.meter")),
            ("POST", r"/v1/billing/meter_events", self._create_meter_event),
            ("GET", r"/v1/invoices", self._list_invoices),
            ("GET", r"/v1/invoices/([^/]+)", self._retriever("invoice")),
            ("GET", r"/v1/payment_intents/([^/]+)", self._retriever("payment_intent")),
            ("GET", r"/v1/charges/([^/]+)", self._retriever("charge")),
            ("GET", r"/v1/balance_transactions/([^/]+)", self._retriever("balance_transaction")),
            ("POST", r"/v1/refunds", self._create_refund),
            ("GET", r"/v1/refunds/([^/]+)", self._retriever("refund")),
            ("GET", r"/v1/subscriptions/([^/]+)", self._retriever("subscription")),
            ("POST", r"/v1/subscriptions/([^/]+)", self._update_subscription),
            ("DELETE", r"/v1/subscriptions/([^/]+)", self._cancel_subscription),
            ("POST", r"/v1/billing_portal/sessions", self._create_portal_session),
            ("GET", r"/v1/events", self._list_events),
            ("GET", r"/v1/events/([^/]+)", self._retriever("event")),
        ]
        return [(method, re.compile(pattern), handler) for method, pattern, handler in table]

    def _handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Answer one HTTP request: (status, headers, body)."""
        url = urlsplit(target)
        if url.path.startswith(("/pay/", "/portal/")):
            with self._lock:
                return self._page(method, url.path, body)
        request_id = "req_" + _random(14)
        out = {"Content-Type": "application/json", "Request-Id": request_id}
        out["Stripe-Version"] = headers.get("stripe-version") or self.api_version
        key = headers.get("idempotency-key") if method == "POST" else None
        with self._lock:
            try:
                self._authenticate(headers.get("authorization", ""))
                params = parse_form(body.decode() if method == "POST" else url.query)
                if key is not None:
                    out["Idempotency-Key"] = key
                    saved = self._idempotency.get(key)
                    if saved is not None:
                        return self._replay(saved, key, method, url.path, params, out)
                handler, args = self._route(method, url.path)
                self._request = (request_id, key)
                try:
                    result = handler(params, *args)
                finally:
                    self._request = (None, None)
                status, payload = 200, self._render(result, params.get("expand"))
            except _ApiError as error:
                status, payload = error.status, error.body()
                out["Stripe-Should-Retry"] = "false"
            except Exception:
                self.errors.append(traceback.format_exc())
                status, payload = 500, {"error": {"type": "api_error", "message": "The Stripe fake failed; see .errors"}}
                out["Stripe-Should-Retry"] = "false"
            data = json.dumps(payload, indent=2).encode()
            # Stripe saves an idempotent result only once the endpoint ran: not for refused parameters.
            if key is not None and (status < 400 or status == 402):
                self._idempotency[key] = (method, url.path, params, status, data, request_id)
            return status, out, data

    def _replay(
        self, saved: tuple[str, str, JSON, int, bytes, str], key: str, method: str, path: str, params: JSON, out: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        old_method, old_path, old_params, status, data, original = saved
        retry = f"Try using a key other than '{key}' if you meant to execute a different request."
        if (old_method, old_path) != (method, path):
            message = (
                "Keys for idempotent requests can only be used for the same endpoint they were first used for "
                f"('{old_method} {old_path}' vs '{method} {path}'). {retry}"
            )
        elif old_params != params:
            message = f"Keys for idempotent requests can only be used with the same parameters they were first used with. {retry}"
        else:
            out["Idempotent-Replayed"] = "true"
            out["Original-Request"] = original
            return status, out, data
        out["Stripe-Should-Retry"] = "false"
        error = _ApiError(400, message, kind="idempotency_error")
        return 400, out, json.dumps(error.body(), indent=2).encode()

    def _authenticate(self, header: str) -> None:
        if header.startswith("Bearer "):
            key = header[len("Bearer ") :].strip()
        elif header.startswith("Basic "):
            key = base64.b64decode(header[len("Basic ") :]).decode(errors="replace").partition(":")[0]
        else:
            key = ""
        if not key:
            raise _ApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization header, using "
                "Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication "
                "for details, or we can help at https://support.stripe.com/.",
            )
        valid = key == self.api_key if self.api_key else key.startswith(("sk_test_", "rk_test_")) and len(key) > 8
        if not valid:
            head = key[: key.find("_", 3) + 1] if key.count("_") >= 2 else key[:3]
            masked = head + "*" * max(len(key) - len(head) - 4, 0) + key[-4:]
            raise _ApiError(401, f"Invalid API Key provided: {masked}")

    def _route(self, method: str, path: str) -> tuple[Callable[..., JSON], list[str]]:
        for route_method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                return handler, [unquote(group) for group in match.groups()]
        raise _ApiError(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help at "
            "https://support.stripe.com/.",
        )

    def _render(self, result: JSON, expand: Any) -> JSON:
        rendered = copy.deepcopy(result)
        if expand is None:
            return rendered
        if not isinstance(expand, list) or not all(isinstance(path, str) for path in expand):
            raise _ApiError(400, "Invalid array", param="expand")
        for path in expand:
            self._expand(rendered, path.split("."), path)
        return rendered

    def _expand(self, node: JSON, parts: list[str], path: str) -> None:
        head, rest = parts[0], parts[1:]
        if node.get("object") == "list" and head == "data":
            for item in node["data"]:
                if rest:
                    self._expand(item, rest, path)
            return
        includable = self._includable(node, head)
        if includable is not None:
            node[head] = includable
        elif isinstance(node.get(head), str) and node[head] in self._objects:
            node[head] = copy.deepcopy(self._objects[node[head]])
        elif head not in node or not (node[head] is None or isinstance(node[head], dict)):
            raise _ApiError(400, f"This property cannot be expanded ({path}).", param="expand")
        if rest and isinstance(node[head], dict):
            self._expand(node[head], rest, path)

    def _includable(self, node: JSON, field: str) -> JSON | None:
        """Fields Stripe leaves out unless expanded."""
        kind, object_id = node.get("object"), node.get("id", "")
        if kind == "checkout.session" and field == "line_items":
            return self._session_line_items({}, object_id)
        if kind == "invoice" and field == "payments":
            payments = [
                obj for obj in self._objects.values() if obj["object"] == "invoice_payment" and obj["invoice"] == object_id
            ]
            return _list_object(copy.deepcopy(payments), f"/v1/invoices/{object_id}/payments", has_more=False)
        return None

    # --- storage and events ---------------------------------------------------------------------------------------

    def _now(self) -> int:
        return int(time.time()) + self._clock_offset

    def _store(self, obj: JSON) -> JSON:
        self._seq += 1
        self._objects[obj["id"]] = obj
        self._order[obj["id"]] = self._seq
        self._created[obj["object"]] += 1
        return obj

    def _base(self, prefix: str, kind: str, **fields: Any) -> JSON:
        return {"id": _new_id(prefix), "object": kind, "created": self._now(), "livemode": False, **fields}

    def _find(self, kind: str, object_id: str, *, param: str = "id", status: int = 404) -> JSON:
        obj = self._objects.get(object_id)
        if obj is None or obj["object"] != kind:
            raise _no_such(kind, object_id, param=param, status=status)
        return obj

    def _control_get(self, kind: str, object_id: str) -> JSON:
        obj = self._objects.get(object_id)
        if obj is None or obj["object"] != kind:
            raise KeyError(f"no {kind} {object_id!r} in the Stripe fake")
        return obj

    def _retriever(self, kind: str) -> Callable[..., JSON]:
        def retrieve(params: JSON, object_id: str) -> JSON:
            _allow(params, ())
            return self._find(kind, object_id)

        return retrieve

    @contextmanager
    def _collect(self) -> Iterator[list[JSON]]:
        """Collect the events emitted inside (control API calls return them)."""
        events: list[JSON] = []
        self._collected = events
        try:
            yield events
        finally:
            self._collected = None

    def _emit(self, event_type: str, obj: JSON, previous: JSON | None = None) -> JSON:
        data: JSON = {"object": copy.deepcopy(obj)}
        if previous:
            data["previous_attributes"] = copy.deepcopy(previous)
        request_id, key = self._request
        event = self._store(
            self._base(
                "evt_",
                "event",
                api_version=self.api_version,
                data=data,
                pending_webhooks=1,
                request={"id": request_id, "idempotency_key": key},
                type=event_type,
            )
        )
        if self._collected is not None:
            self._collected.append(copy.deepcopy(event))
        return event

    def _update(self, obj: JSON, changes: JSON, event_type: str | None) -> JSON:
        """Apply `changes`; emit `event_type` with `previous_attributes` when something changed."""
        previous = {key: copy.deepcopy(obj.get(key)) for key, value in changes.items() if obj.get(key) != value}
        obj.update(changes)
        if previous and event_type:
            self._emit(event_type, obj, previous)
        return obj

    def _paginate(self, params: JSON, items: list[JSON], url: str) -> JSON:
        """Stripe's cursor pagination over `items` (any order in; newest first out)."""
        limit = _int(params, "limit", minimum=1)
        limit = 10 if limit is None else limit
        if limit > 100:
            raise _ApiError(400, "This value must be less than or equal to 100.", code="parameter_invalid_integer", param="limit")
        created = params.get("created")
        if created is not None:
            if isinstance(created, dict):
                _allow(created, ("gt", "gte", "lt", "lte"), "created")
                bounds = {op: _int(created, op, prefix="created") for op in ("gt", "gte", "lt", "lte")}
            else:
                exact = _int(params, "created")
                bounds = {"gte": exact, "lte": exact, "gt": None, "lt": None}
            items = [item for item in items if _in_bounds(item["created"], bounds)]
        ordered = sorted(items, key=lambda item: self._order[item["id"]], reverse=True)
        after, before = _str(params, "starting_after"), _str(params, "ending_before")
        if after and before:
            raise _ApiError(400, "You may only specify one of these parameters: ending_before, starting_after.")
        if after or before:
            cursor = after or before or ""
            if cursor not in self._order:
                kind = ordered[0]["object"] if ordered else "object"
                raise _no_such(kind, cursor, param="starting_after" if after else "ending_before", status=400)
            mark = self._order[cursor]
            if after:
                rest = [item for item in ordered if self._order[item["id"]] < mark]
                page, has_more = rest[:limit], len(rest) > limit
            else:
                newer = [item for item in ordered if self._order[item["id"]] > mark]
                page, has_more = newer[-limit:], len(newer) > limit
        else:
            page, has_more = ordered[:limit], len(ordered) > limit
        return _list_object(page, url, has_more=has_more)

    # --- customers, products, prices ------------------------------------------------------------------------------

    _CUSTOMER_FIELDS = ("description", "email", "name", "phone")

    def _create_customer(self, params: JSON) -> JSON:
        _allow(params, (*self._CUSTOMER_FIELDS, "metadata", "preferred_locales"))
        return self._new_customer(params)

    def _new_customer(self, params: JSON) -> JSON:
        fields = {name: _str(params, name) or None for name in self._CUSTOMER_FIELDS}
        customer = self._base(
            "cus_",
            "customer",
            address=None,
            balance=0,
            currency=None,
            default_source=None,
            delinquent=False,
            discount=None,
            invoice_prefix=_random(8, string.ascii_uppercase + string.digits),
            invoice_settings={"custom_fields": None, "default_payment_method": None, "footer": None, "rendering_options": None},
            metadata=_metadata(params),
            next_invoice_sequence=1,
            preferred_locales=[str(item) for item in _list(params, "preferred_locales")],
            shipping=None,
            tax_exempt="none",
            test_clock=None,
            **fields,
        )
        self._store(customer)
        self._emit("customer.created", customer)
        return customer

    def _update_customer(self, params: JSON, customer_id: str) -> JSON:
        customer = self._find("customer", customer_id)
        _allow(params, (*self._CUSTOMER_FIELDS, "metadata", "preferred_locales"))
        changes: JSON = {name: _str(params, name) or None for name in self._CUSTOMER_FIELDS if name in params}
        changes["metadata"] = _metadata(params, customer["metadata"])
        if "preferred_locales" in params:
            changes["preferred_locales"] = [str(item) for item in _list(params, "preferred_locales")]
        return self._update(customer, changes, "customer.updated")

    _PRODUCT_FIELDS = ("description", "statement_descriptor", "tax_code", "unit_label", "url")

    def _create_product(self, params: JSON) -> JSON:
        _allow(params, (*self._PRODUCT_FIELDS, "active", "id", "images", "metadata", "name"))
        custom_id = _str(params, "id")
        if custom_id is not None and custom_id in self._objects:
            raise _ApiError(400, "Product already exists.", code="resource_already_exists", param="id")
        return self._new_product(params, custom_id)

    def _new_product(self, params: JSON, custom_id: str | None = None, prefix: str = "") -> JSON:
        now = self._now()
        product = self._base(
            "prod_",
            "product",
            active=_bool(params, "active", prefix=prefix) is not False,
            default_price=None,
            description=_str(params, "description", prefix=prefix) or None,
            images=[str(image) for image in _list(params, "images", prefix=prefix)],
            marketing_features=[],
            metadata=_metadata(params, prefix=prefix),
            name=_str(params, "name", prefix=prefix, required=True),
            package_dimensions=None,
            shippable=None,
            statement_descriptor=_str(params, "statement_descriptor", prefix=prefix) or None,
            tax_code=_str(params, "tax_code", prefix=prefix) or None,
            type="service",
            unit_label=_str(params, "unit_label", prefix=prefix) or None,
            updated=now,
            url=_str(params, "url", prefix=prefix) or None,
        )
        if custom_id:
            product["id"] = custom_id
        self._store(product)
        self._emit("product.created", product)
        return product

    def _update_product(self, params: JSON, product_id: str) -> JSON:
        product = self._find("product", product_id)
        _allow(params, (*self._PRODUCT_FIELDS, "active", "default_price", "images", "metadata", "name"))
        changes: JSON = {name: _str(params, name) or None for name in self._PRODUCT_FIELDS if name in params}
        if "name" in params:
            changes["name"] = _str(params, "name", required=True)
        if "active" in params:
            changes["active"] = _bool(params, "active")
        if "images" in params:
            changes["images"] = [str(image) for image in _list(params, "images")]
        if "default_price" in params:
            price_id = _str(params, "default_price")
            if price_id:
                price = self._find("price", price_id, param="default_price", status=400)
                if price["product"] != product_id:
                    raise _ApiError(400, "The default price must belong to this product.", param="default_price")  # approx.
            changes["default_price"] = price_id or None
        changes["metadata"] = _metadata(params, product["metadata"])
        if any(product.get(key) != value for key, value in changes.items()):
            changes["updated"] = self._now()
        return self._update(product, changes, "product.updated")

    _PRICE_CREATE = (
        "active",
        "billing_scheme",
        "currency",
        "lookup_key",
        "metadata",
        "nickname",
        "product",
        "product_data",
        "recurring",
        "tax_behavior",
        "transfer_lookup_key",
        "unit_amount",
        "unit_amount_decimal",
    )

    def _create_price(self, params: JSON) -> JSON:
        _allow(params, self._PRICE_CREATE)
        currency = _currency(_str(params, "currency", required=True) or "")
        if _enum(params, "billing_scheme", ("per_unit", "tiered")) == "tiered":
            raise _ApiError(400, "Tiered prices are not modelled by the Stripe fake.", param="billing_scheme")
        product_id = _str(params, "product")
        product_data = _hash(params, "product_data")
        if product_id and product_data is not None:
            raise _ApiError(400, "You may only specify one of these parameters: product, product_data.")
        if product_id is None and product_data is None:
            raise _missing("product")
        if product_id:
            self._find("product", product_id, param="product", status=400)
        amount, amount_decimal = self._unit_amount(params)
        recurring = self._recurring(params)
        lookup_key = _str(params, "lookup_key") or None
        holder = self._price_with_lookup_key(lookup_key)
        if holder is not None and not _bool(params, "transfer_lookup_key"):
            raise _ApiError(
                400, f"A price (`{holder['id']}`) already uses that lookup key.", code="lookup_key_exists", param="lookup_key"
            )  # wording approximate
        tax_behavior = _enum(params, "tax_behavior", ("exclusive", "inclusive", "unspecified")) or "unspecified"
        if product_data is not None:
            _allow(product_data, ("active", "metadata", "name", "statement_descriptor", "tax_code", "unit_label"), "product_data")
            product_id = self._new_product(product_data, prefix="product_data")["id"]
        if holder is not None:
            self._update(holder, {"lookup_key": None}, "price.updated")
        price = self._base(
            "price_",
            "price",
            active=_bool(params, "active") is not False,
            billing_scheme="per_unit",
            currency=currency,
            custom_unit_amount=None,
            lookup_key=lookup_key,
            metadata=_metadata(params),
            nickname=_str(params, "nickname") or None,
            product=product_id,
            recurring=recurring,
            tax_behavior=tax_behavior,
            tiers_mode=None,
            transform_quantity=None,
            type="recurring" if recurring else "one_time",
            unit_amount=amount,
            unit_amount_decimal=amount_decimal,
        )
        self._store(price)
        self._emit("price.created", price)
        return price

    def _unit_amount(self, params: JSON) -> tuple[int | None, str]:
        if "unit_amount" in params and "unit_amount_decimal" in params:
            raise _ApiError(400, "You may only specify one of these parameters: unit_amount, unit_amount_decimal.")
        amount = _int(params, "unit_amount", minimum=0)
        if amount is not None:
            return amount, str(amount)
        raw = _str(params, "unit_amount_decimal")
        if raw is None:
            raise _missing("unit_amount")  # Stripe: one of unit_amount, unit_amount_decimal, custom_unit_amount
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise _ApiError(400, f"Invalid decimal: {raw}", param="unit_amount_decimal") from None
        if value < 0 or not value.is_finite() or -value.as_tuple().exponent > 12:  # type: ignore[operator]
            raise _ApiError(400, f"Invalid decimal: {raw}", param="unit_amount_decimal")
        text = format(value.normalize(), "f")
        return (int(value) if value == value.to_integral_value() else None), text

    def _recurring(self, params: JSON) -> JSON | None:
        recurring = _hash(params, "recurring")
        if recurring is None:
            return None
        _allow(recurring, ("interval", "interval_count", "meter", "trial_period_days", "usage_type"), "recurring")
        interval = _enum(recurring, "interval", ("day", "week", "month", "year"), prefix="recurring", required=True)
        usage_type = _enum(recurring, "usage_type", ("licensed", "metered"), prefix="recurring") or "licensed"
        meter_id = _str(recurring, "meter", prefix="recurring") or None
        if usage_type == "metered" and meter_id is None:
            raise _missing("recurring[meter]")  # metered prices need a meter since API version 2025-03-31.basil
        if meter_id is not None:
            if usage_type != "metered":
                raise _ApiError(400, "recurring[meter] can only be set when usage_type is metered.", param="recurring[meter]")
            self._find("billing.meter", meter_id, param="recurring[meter]", status=400)
        return {
            "interval": interval,
            "interval_count": _int(recurring, "interval_count", prefix="recurring", minimum=1) or 1,
            "meter": meter_id,
            "trial_period_days": _int(recurring, "trial_period_days", prefix="recurring", minimum=0),
            "usage_type": usage_type,
        }

    def _price_with_lookup_key(self, lookup_key: str | None) -> JSON | None:
        if lookup_key is None:
            return None
        for obj in self._objects.values():
            if obj["object"] == "price" and obj["lookup_key"] == lookup_key:
                return obj
        return None

    def _update_price(self, params: JSON, price_id: str) -> JSON:
        price = self._find("price", price_id)
        _allow(params, ("active", "lookup_key", "metadata", "nickname", "tax_behavior", "transfer_lookup_key"))
        changes: JSON = {"metadata": _metadata(params, price["metadata"])}
        if "active" in params:
            changes["active"] = _bool(params, "active")
        if "nickname" in params:
            changes["nickname"] = _str(params, "nickname") or None
        if "lookup_key" in params:
            lookup_key = _str(params, "lookup_key") or None
            holder = self._price_with_lookup_key(lookup_key)
            if holder is not None and holder is not price:
                if not _bool(params, "transfer_lookup_key"):
                    raise _ApiError(
                        400,
                        f"A price (`{holder['id']}`) already uses that lookup key.",
                        code="lookup_key_exists",
                        param="lookup_key",
                    )
                self._update(holder, {"lookup_key": None}, "price.updated")
            changes["lookup_key"] = lookup_key
        return self._update(price, changes, "price.updated")

    def _list_prices(self, params: JSON) -> JSON:
        _allow(
            params,
            ("active", "created", "currency", "ending_before", "limit", "lookup_keys", "product", "starting_after", "type"),
        )
        prices = [obj for obj in self._objects.values() if obj["object"] == "price"]
        active = _bool(params, "active")
        lookup_keys = [str(key) for key in _list(params, "lookup_keys")]
        if len(lookup_keys) > 10:
            raise _ApiError(400, "You may only specify up to 10 lookup_keys.", param="lookup_keys")  # wording approximate
        filters = {"product": _str(params, "product"), "currency": _str(params, "currency"), "type": _str(params, "type")}
        prices = [
            price
            for price in prices
            if (active is None or price["active"] == active)
            and (not lookup_keys or price["lookup_key"] in lookup_keys)
            and all(value is None or price[name] == value for name, value in filters.items())
        ]
        return self._paginate(params, prices, "/v1/prices")

    # --- checkout -----------------------------------------------------------------------------------------------------

    _SESSION_CREATE = (
        "allow_promotion_codes",
        "cancel_url",
        "client_reference_id",
        "customer",
        "customer_email",
        "expires_at",
        "line_items",
        "locale",
        "metadata",
        "mode",
        "payment_intent_data",
        "payment_method_types",
        "subscription_data",
        "success_url",
    )

    def _create_session(self, params: JSON) -> JSON:
        _allow(params, self._SESSION_CREATE)
        mode = _enum(params, "mode", ("payment", "setup", "subscription"), required=True)
        if mode == "setup":
            raise _ApiError(400, "Checkout in setup mode is not modelled by the Stripe fake.", param="mode")
        customer_id = _str(params, "customer") or None
        email = _str(params, "customer_email") or None
        if customer_id and email:
            raise _ApiError(400, "You may only specify one of these parameters: customer, customer_email.")
        if customer_id:
            self._find("customer", customer_id, param="customer", status=400)
        lines = self._session_lines(params, mode or "")
        extras = self._session_extras_of(params, mode or "")
        now = self._now()
        expires_at = _int(params, "expires_at") or now + _DAY
        if not now + 30 * 60 <= expires_at <= now + _DAY:
            raise _ApiError(
                400,
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session creation.",
                param="expires_at",
            )  # wording approximate
        subtotal = sum(line["amount_subtotal"] for line in lines)
        session = self._base(
            "cs_test_",
            "checkout.session",
            after_expiration=None,
            allow_promotion_codes=_bool(params, "allow_promotion_codes"),
            amount_subtotal=subtotal,
            amount_total=subtotal,
            automatic_tax={"enabled": False, "liability": None, "provider": None, "status": None},
            billing_address_collection=None,
            cancel_url=_str(params, "cancel_url") or None,
            client_reference_id=_str(params, "client_reference_id") or None,
            client_secret=None,
            consent=None,
            consent_collection=None,
            currency=lines[0]["currency"],
            custom_fields=[],
            customer=customer_id,
            customer_creation=None if customer_id else ("always" if mode == "subscription" else "if_required"),
            customer_details=self._customer_details(email) if email else None,
            customer_email=email,
            discounts=[],
            expires_at=expires_at,
            invoice=None,
            invoice_creation={"enabled": False, "invoice_data": None} if mode == "payment" else None,
            locale=_str(params, "locale") or None,
            metadata=_metadata(params),
            mode=mode,
            payment_intent=None,
            payment_link=None,
            payment_method_collection="always" if mode == "subscription" else "if_required",
            payment_method_types=[str(kind) for kind in _list(params, "payment_method_types")] or ["card"],
            payment_status="unpaid",
            setup_intent=None,
            shipping_address_collection=None,
            status="open",
            submit_type=None,
            subscription=None,
            success_url=_str(params, "success_url") or None,
            total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            ui_mode="hosted",
        )
        session["url"] = f"{self.base_url}/pay/{session['id']}"
        self._session_items[session["id"]] = lines
        self._session_extras[session["id"]] = extras
        return self._store(session)

    def _session_lines(self, params: JSON, mode: str) -> list[JSON]:
        raw_lines = _list(params, "line_items")
        if not raw_lines:
            raise _missing("line_items")
        lines: list[JSON] = []
        for index, raw in enumerate(raw_lines):
            prefix = f"line_items[{index}]"
            if not isinstance(raw, dict):
                raise _ApiError(400, "Invalid hash", param=prefix)
            _allow(raw, ("price", "quantity"), prefix)
            price_id = _str(raw, "price", prefix=prefix, required=True) or ""
            price = self._find("price", price_id, param=f"{prefix}[price]", status=400)
            if not price["active"]:
                raise _ApiError(
                    400, "The price specified is inactive. This field only accepts active prices.", param=f"{prefix}[price]"
                )
            metered = bool(price["recurring"] and price["recurring"]["usage_type"] == "metered")
            quantity = _int(raw, "quantity", prefix=prefix, minimum=0)
            if metered and quantity is not None:
                raise _ApiError(
                    400,
                    f"Quantity should not be specified where usage_type is `metered`. Remove quantity from `{prefix}`.",
                    param=f"{prefix}[quantity]",
                )  # wording approximate
            if not metered and quantity is None:
                raise _missing(f"{prefix}[quantity]")
            if mode == "subscription" and not price["recurring"]:
                raise _ApiError(
                    400, "One-time prices in subscription mode are not modelled by the Stripe fake.", param=f"{prefix}[price]"
                )
            if mode == "payment" and price["recurring"]:
                raise _ApiError(
                    400,
                    "You specified `payment` mode but passed a recurring price. Either switch to `subscription` mode or "
                    "use only one-time prices.",
                    param="mode",
                )
            if lines and price["currency"] != lines[0]["currency"]:
                raise _ApiError(
                    400, "All prices on a Checkout Session must have the same currency.", param=f"{prefix}[price]"
                )  # approx.
            amount = 0 if metered else (quantity or 0) * (price["unit_amount"] or 0)
            lines.append(
                {
                    "id": _new_id("li_"),
                    "object": "item",
                    "amount_discount": 0,
                    "amount_subtotal": amount,
                    "amount_tax": 0,
                    "amount_total": amount,
                    "currency": price["currency"],
                    "description": self._objects[price["product"]]["name"],
                    "price": copy.deepcopy(price),
                    "quantity": quantity,
                }
            )
        return lines

    def _session_extras_of(self, params: JSON, mode: str) -> JSON:
        """payment_intent_data (payment mode) or subscription_data (subscription mode), checked."""
        other, name = (
            ("subscription_data", "payment_intent_data") if mode == "payment" else ("payment_intent_data", "subscription_data")
        )
        if other in params:
            raise _ApiError(400, f"You can not pass `{other}` in `{mode}` mode.", param=other)
        data = _hash(params, name) or {}
        _allow(data, ("description", "metadata"), name)
        return {"metadata": _metadata(data, prefix=name), "description": _str(data, "description", prefix=name) or None}

    def _session_line_items(self, params: JSON, session_id: str) -> JSON:
        self._find("checkout.session", session_id)
        _allow(params, ("limit",))
        limit = _int(params, "limit", minimum=1) or 10
        items = copy.deepcopy(self._session_items[session_id])
        return _list_object(items[:limit], f"/v1/checkout/sessions/{session_id}/line_items", has_more=len(items) > limit)

    def _expire_session(self, params: JSON, session_id: str) -> JSON:
        _allow(params, ())
        session = self._find("checkout.session", session_id)
        if session["status"] != "open":
            raise _ApiError(
                400,
                f'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session has a status of "{session["status"]}".',
            )  # wording approximate
        return self._expire(session)

    def _expire(self, session: JSON) -> JSON:
        if session["status"] != "open":
            raise ValueError(f"checkout session {session['id']} is {session['status']}, not open")
        session.update(status="expired", url=None)
        self._emit("checkout.session.expired", session)
        return session

    def _customer_details(self, email: str | None) -> JSON:
        return {"address": None, "email": email, "name": None, "phone": None, "tax_exempt": "none", "tax_ids": []}

    # --- payments -------------------------------------------------------------------------------------------------

    def _pay(
        self,
        customer_id: str | None,
        amount: int,
        currency: str,
        *,
        metadata: dict[str, str],
        description: str | None,
        fee: int | None,
        succeed: bool = True,
    ) -> JSON:
        """A payment intent with one charge (succeeded, or declined); emits payment_intent.succeeded/payment_failed."""
        method = self._store(
            self._base(
                "pm_",
                "payment_method",
                billing_details={"address": None, "email": None, "name": None, "phone": None},
                card={
                    "brand": "visa",
                    "country": "US",
                    "exp_month": 12,
                    "exp_year": datetime.now(UTC).year + 3,
                    "funding": "credit",
                    "last4": "4242",
                },
                customer=customer_id,
                metadata={},
                type="card",
            )
        )
        intent = self._base(
            "pi_",
            "payment_intent",
            amount=amount,
            amount_capturable=0,
            amount_received=amount if succeed else 0,
            application=None,
            application_fee_amount=None,
            automatic_payment_methods=None,
            canceled_at=None,
            cancellation_reason=None,
            capture_method="automatic_async",
            confirmation_method="automatic",
            currency=currency,
            customer=customer_id,
            description=description,
            last_payment_error=None,
            latest_charge=None,
            metadata=dict(metadata),
            next_action=None,
            on_behalf_of=None,
            payment_method=method["id"] if succeed else None,
            payment_method_types=["card"],
            processing=None,
            receipt_email=None,
            setup_future_usage=None,
            shipping=None,
            statement_descriptor=None,
            statement_descriptor_suffix=None,
            status="succeeded" if succeed else "requires_payment_method",
            transfer_data=None,
            transfer_group=None,
        )
        intent["client_secret"] = f"{intent['id']}_secret_{_random(25)}"
        self._store(intent)
        charge = self._base(
            "ch_",
            "charge",
            amount=amount,
            amount_captured=amount if succeed else 0,
            amount_refunded=0,
            balance_transaction=None,
            billing_details=method["billing_details"],
            calculated_statement_descriptor="STRIPE FAKE",
            captured=succeed,
            currency=currency,
            customer=customer_id,
            description=description,
            disputed=False,
            failure_code=None if succeed else "card_declined",
            failure_message=None if succeed else "Your card was declined.",
            fraud_details={},
            metadata=dict(metadata),
            outcome={
                "network_status": "approved_by_network" if succeed else "declined_by_network",
                "reason": None if succeed else "generic_decline",
                "risk_level": "normal",
                "seller_message": "Payment complete."
                if succeed
                else "The bank did not return any further details with this decline.",
                "type": "authorized" if succeed else "issuer_declined",
            },
            paid=succeed,
            payment_intent=intent["id"],
            payment_method=method["id"],
            payment_method_details={"card": dict(method["card"]), "type": "card"},
            receipt_email=None,
            receipt_number=None,
            refunded=False,
            status="succeeded" if succeed else "failed",
        )
        charge["receipt_url"] = f"{self.base_url}/receipts/{charge['id']}"
        if succeed:
            charged_fee = min(amount, _stripe_fee(amount) if fee is None else fee)
            charge["balance_transaction"] = self._balance_transaction(
                amount, currency, charged_fee, source=charge["id"], kind="charge", description=description
            )["id"]
        self._store(charge)
        intent["latest_charge"] = charge["id"]
        if succeed:
            self._emit("payment_intent.succeeded", intent)
        else:
            intent["last_payment_error"] = {
                "charge": charge["id"],
                "code": "card_declined",
                "decline_code": "generic_decline",
                "doc_url": "https://docs.stripe.com/error-codes/card-declined",
                "message": "Your card was declined.",
                "payment_method": copy.deepcopy(method),
                "type": "card_error",
            }
            self._emit("payment_intent.payment_failed", intent)
        return intent

    def _balance_transaction(
        self, amount: int, currency: str, fee: int, *, source: str, kind: str, description: str | None
    ) -> JSON:
        now = self._now()
        fee_details = [
            {
                "amount": fee,
                "application": None,
                "currency": currency,
                "description": "Stripe processing fees",
                "type": "stripe_fee",
            }
        ]
        return self._store(
            self._base(
                "txn_",
                "balance_transaction",
                amount=amount,
                available_on=now + 2 * _DAY,
                currency=currency,
                description=description,
                exchange_rate=None,
                fee=fee,
                fee_details=fee_details if fee else [],
                net=amount - fee,
                reporting_category=kind,
                source=source,
                status="pending",
                type=kind,
            )
        )

    def _create_refund(self, params: JSON) -> JSON:
        _allow(params, ("amount", "charge", "metadata", "payment_intent", "reason"))
        intent_id, charge_id = _str(params, "payment_intent") or None, _str(params, "charge") or None
        if intent_id is None and charge_id is None:
            raise _missing("charge")  # Stripe asks for one of charge or payment_intent
        if intent_id is not None:
            intent = self._find("payment_intent", intent_id, param="payment_intent", status=400)
            if intent["status"] != "succeeded" or intent["latest_charge"] is None:
                raise _ApiError(
                    400, f"This PaymentIntent ({intent_id}) does not have a successful charge to refund.", param="payment_intent"
                )  # wording approximate
            if charge_id is not None and charge_id != intent["latest_charge"]:
                raise _ApiError(
                    400, f"Charge {charge_id} does not belong to PaymentIntent {intent_id}.", param="charge"
                )  # approx.
            charge_id = intent["latest_charge"]
        charge = self._find("charge", charge_id or "", param="charge", status=400)
        reason = _enum(params, "reason", ("duplicate", "fraudulent", "requested_by_customer"))
        remaining = charge["amount_captured"] - charge["amount_refunded"]
        if remaining <= 0:
            raise _ApiError(400, f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded")
        amount = _int(params, "amount")
        if amount is not None and amount <= 0:
            raise _ApiError(400, "Invalid positive integer", code="parameter_invalid_integer", param="amount")
        amount = remaining if amount is None else amount
        if amount > remaining:
            raise _ApiError(
                400,
                f"Refund amount ({_money(amount, charge['currency'])}) is greater than unrefunded amount on charge "
                f"({_money(remaining, charge['currency'])})",
                param="amount",
            )
        refund = self._base(
            "re_",
            "refund",
            amount=amount,
            charge=charge["id"],
            currency=charge["currency"],
            description=None,
            destination_details={
                "card": {"reference_status": "pending", "reference_type": "acquirer_reference_number", "type": "refund"},
                "type": "card",
            },
            metadata=_metadata(params),
            payment_intent=charge["payment_intent"],
            reason=reason,
            receipt_number=None,
            source_transfer_reversal=None,
            status="succeeded",
            transfer_reversal=None,
        )
        refund["balance_transaction"] = self._balance_transaction(
            -amount, charge["currency"], 0, source=refund["id"], kind="refund", description=None
        )["id"]
        self._store(refund)
        self._emit("refund.created", refund)
        refunded = charge["amount_refunded"] + amount
        self._update(charge, {"amount_refunded": refunded, "refunded": refunded >= charge["amount_captured"]}, None)
        self._emit("charge.refunded", charge, {"amount_refunded": refunded - amount, "refunded": False})
        return refund

    # --- subscriptions and invoices -------------------------------------------------------------------------------

    def _new_subscription(self, customer_id: str, lines: list[JSON], extras: JSON, *, fee: int | None) -> JSON:
        now = self._now()
        subscription = self._base(
            "sub_",
            "subscription",
            application=None,
            application_fee_percent=None,
            automatic_tax={"disabled_reason": None, "enabled": False, "liability": None},
            billing_cycle_anchor=now,
            billing_cycle_anchor_config=None,
            cancel_at=None,
            cancel_at_period_end=False,
            canceled_at=None,
            cancellation_details={"comment": None, "feedback": None, "reason": None},
            collection_method="charge_automatically",
            currency=lines[0]["currency"],
            customer=customer_id,
            days_until_due=None,
            default_payment_method=None,
            description=extras.get("description"),
            discounts=[],
            ended_at=None,
            invoice_settings={"account_tax_ids": None, "issuer": {"type": "self"}},
            latest_invoice=None,
            metadata=dict(extras.get("metadata", {})),
            next_pending_invoice_item_invoice=None,
            on_behalf_of=None,
            pause_collection=None,
            pending_invoice_item_interval=None,
            pending_setup_intent=None,
            pending_update=None,
            schedule=None,
            start_date=now,
            status="active",
            test_clock=None,
            transfer_data=None,
            trial_end=None,
            trial_settings={"end_behavior": {"missing_payment_method": "create_invoice"}},
            trial_start=None,
        )
        items = []
        for line in lines:
            price = line["price"]
            item: JSON = self._base(
                "si_",
                "subscription_item",
                current_period_end=_add_interval(now, price["recurring"]["interval"], price["recurring"]["interval_count"]),
                current_period_start=now,
                discounts=[],
                metadata={},
                plan=_plan(price),
                price=copy.deepcopy(price),
                subscription=subscription["id"],
                tax_rates=[],
            )
            if line["quantity"] is not None:
                item["quantity"] = line["quantity"]
            items.append(item)
        subscription["items"] = _list_object(items, f"/v1/subscription_items?subscription={subscription['id']}", has_more=False)
        subscription["items"]["total_count"] = len(items)
        self._store(subscription)
        self._cycles[subscription["id"]] = 0
        invoice_lines = [self._licensed_line(item, now, item["current_period_end"]) for item in items]
        invoice = self._new_invoice(subscription, "subscription_create", invoice_lines, now, now)
        subscription["latest_invoice"] = invoice["id"]
        self._emit("customer.subscription.created", subscription)
        self._settle(invoice, pay=True, fee=fee)
        return subscription

    def _licensed_line(self, item: JSON, start: int, end: int) -> JSON:
        price = item["price"]
        if price["recurring"]["usage_type"] == "metered":
            return self._line(item, Decimal(0), start, end)
        return self._line(item, Decimal(item.get("quantity", 1)), start, end)

    def _line(self, item: JSON, quantity: Decimal, start: int, end: int) -> JSON:
        price = item["price"]
        amount = int((quantity * Decimal(price["unit_amount_decimal"])).to_integral_value(ROUND_HALF_UP))
        product = self._objects[price["product"]]
        whole = quantity == quantity.to_integral_value()
        return {
            "id": _new_id("il_"),
            "object": "line_item",
            "amount": amount,
            "currency": price["currency"],
            "description": f"{quantity:f} \u00d7 {product['name']} (at {_money(price['unit_amount'] or 0, price['currency'])} / {price['recurring']['interval']})",
            "discount_amounts": [],
            "discountable": True,
            "discounts": [],
            "invoice": None,
            "livemode": False,
            "metadata": {},
            "parent": {
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": item["subscription"],
                    "subscription_item": item["id"],
                },
                "type": "subscription_item_details",
            },
            "period": {"end": end, "start": start},
            "pretax_credit_amounts": [],
            "pricing": {
                "price_details": {"price": price["id"], "product": price["product"]},
                "type": "price_details",
                "unit_amount_decimal": price["unit_amount_decimal"],
            },
            "quantity": int(quantity) if whole else None,
            "subscription": item["subscription"],
            "subtotal": amount,
            "taxes": [],
        }

    def _new_invoice(self, subscription: JSON, reason: str, lines: list[JSON], period_start: int, period_end: int) -> JSON:
        customer = self._objects[subscription["customer"]]
        total = sum(line["amount"] for line in lines)
        number = f"{customer['invoice_prefix']}-{customer['next_invoice_sequence']:04d}"
        customer["next_invoice_sequence"] += 1
        invoice = self._base(
            "in_",
            "invoice",
            account_country="US",
            account_name="Stripe fake",
            amount_due=total,
            amount_overpaid=0,
            amount_paid=0,
            amount_remaining=total,
            amount_shipping=0,
            application=None,
            attempt_count=0,
            attempted=False,
            auto_advance=True,
            automatic_tax={"disabled_reason": None, "enabled": False, "liability": None, "provider": None, "status": None},
            billing_reason=reason,
            collection_method="charge_automatically",
            currency=subscription["currency"],
            customer=customer["id"],
            customer_email=customer["email"],
            customer_name=customer["name"],
            default_payment_method=None,
            description=None,
            discounts=[],
            due_date=None,
            ending_balance=0,
            footer=None,
            last_finalization_error=None,
            metadata={},
            next_payment_attempt=None,
            number=number,
            parent={
                "quote_details": None,
                "subscription_details": {"metadata": dict(subscription["metadata"]), "subscription": subscription["id"]},
                "type": "subscription_details",
            },
            period_end=period_end,
            period_start=period_start,
            starting_balance=0,
            status="open",
            status_transitions={"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None, "voided_at": None},
            subtotal=total,
            subtotal_excluding_tax=total,
            total=total,
            total_discount_amounts=[],
            total_excluding_tax=total,
            total_taxes=[],
            webhooks_delivered_at=None,
        )
        invoice["effective_at"] = invoice["created"]
        invoice["status_transitions"]["finalized_at"] = invoice["created"]
        invoice["hosted_invoice_url"] = f"{self.base_url}/invoices/{invoice['id']}"
        invoice["invoice_pdf"] = f"{self.base_url}/invoices/{invoice['id']}/pdf"
        for line in lines:
            line["invoice"] = invoice["id"]
        invoice["lines"] = _list_object(lines, f"/v1/invoices/{invoice['id']}/lines", has_more=False)
        invoice["lines"]["total_count"] = len(lines)
        return self._store(invoice)

    def _settle(self, invoice: JSON, *, pay: bool, fee: int | None) -> None:
        """Charge the invoice: paid (invoice.paid) or declined (invoice.payment_failed)."""
        total, now = invoice["amount_due"], self._now()
        if total > 0:
            description = "Subscription creation" if invoice["billing_reason"] == "subscription_create" else "Subscription update"
            intent = self._pay(
                invoice["customer"], total, invoice["currency"], metadata={}, description=description, fee=fee, succeed=pay
            )
            self._store(
                self._base(
                    "inpay_",
                    "invoice_payment",
                    amount_paid=total if pay else None,
                    amount_requested=total,
                    currency=invoice["currency"],
                    invoice=invoice["id"],
                    is_default=True,
                    payment={"payment_intent": intent["id"], "type": "payment_intent"},
                    status="paid" if pay else "open",
                    status_transitions={"canceled_at": None, "paid_at": now if pay else None},
                )
            )
        changes: JSON = {"attempt_count": 1 if total else 0, "attempted": True}
        if pay:
            transitions = {**invoice["status_transitions"], "paid_at": now}
            changes.update(
                amount_paid=total, amount_remaining=0, auto_advance=False, status="paid", status_transitions=transitions
            )
            invoice.update(changes)
            self._emit("invoice.paid", invoice)
        else:
            changes["next_payment_attempt"] = now + 3 * _DAY
            invoice.update(changes)
            self._emit("invoice.payment_failed", invoice)

    def _cycle(self, subscription: JSON, *, pay: bool, fee: int | None) -> None:
        if subscription["status"] not in ("active", "past_due", "trialing"):
            raise ValueError(f"subscription {subscription['id']} is {subscription['status']}")
        if subscription["cancel_at_period_end"]:
            self._end(subscription, "cancellation_requested")
            return
        cycle = self._cycles[subscription["id"]] + 1
        self._cycles[subscription["id"]] = cycle
        anchor = subscription["billing_cycle_anchor"]
        old_items = copy.deepcopy(subscription["items"])
        lines: list[JSON] = []
        old_start = new_start = 0
        for item in subscription["items"]["data"]:
            recurring = item["price"]["recurring"]
            old_start, new_start = item["current_period_start"], item["current_period_end"]
            new_end = _add_interval(anchor, recurring["interval"], recurring["interval_count"] * (cycle + 1))
            if recurring["usage_type"] == "metered":
                lines.append(
                    self._line(
                        item,
                        self._usage(subscription["customer"], recurring["meter"], old_start, new_start),
                        old_start,
                        new_start,
                    )
                )
            else:
                lines.append(self._licensed_line(item, new_start, new_end))
            item.update(current_period_start=new_start, current_period_end=new_end)
        invoice = self._new_invoice(subscription, "subscription_cycle", lines, old_start, new_start)
        previous: JSON = {"items": old_items, "latest_invoice": subscription["latest_invoice"]}
        subscription["latest_invoice"] = invoice["id"]
        new_status = "active" if pay or invoice["amount_due"] == 0 else "past_due"
        if new_status != subscription["status"]:
            previous["status"] = subscription["status"]
            subscription["status"] = new_status
        self._emit("customer.subscription.updated", subscription, previous)
        self._settle(invoice, pay=pay or invoice["amount_due"] == 0, fee=fee)

    def _usage(self, customer_id: str, meter_id: str, start: int, end: int) -> Decimal:
        """A meter's aggregate for one customer over [start, end)."""
        meter = self._objects[meter_id]
        customer_key = meter["customer_mapping"]["event_payload_key"]
        value_key = meter["value_settings"]["event_payload_key"]
        events = sorted(
            (
                event
                for event in self._meter_events
                if event["event_name"] == meter["event_name"]
                and event["payload"].get(customer_key) == customer_id
                and start <= event["timestamp"] < end
            ),
            key=lambda event: event["timestamp"],
        )
        formula = meter["default_aggregation"]["formula"]
        if formula == "count":
            return Decimal(len(events))
        if formula == "last":
            return _decimal(events[-1]["payload"].get(value_key)) if events else Decimal(0)
        return sum((_decimal(event["payload"].get(value_key)) for event in events), Decimal(0))

    def _update_subscription(self, params: JSON, subscription_id: str) -> JSON:
        subscription = self._find("subscription", subscription_id)
        _allow(params, ("cancel_at_period_end", "cancellation_details", "description", "metadata"))
        details = _hash(params, "cancellation_details")
        if subscription["status"] == "canceled" and set(params) - {"metadata", "cancellation_details", "expand"}:
            raise _ApiError(400, "A canceled subscription can only update its cancellation_details and metadata.")
        changes: JSON = {"metadata": _metadata(params, subscription["metadata"])}
        if "description" in params:
            changes["description"] = _str(params, "description") or None
        if details is not None:
            changes["cancellation_details"] = self._cancellation_details(details, subscription["cancellation_details"])
        at_end = _bool(params, "cancel_at_period_end")
        if at_end is not None:
            period_end = max(item["current_period_end"] for item in subscription["items"]["data"])
            changes.update(cancel_at_period_end=at_end, cancel_at=period_end if at_end else None)
            changes["canceled_at"] = self._now() if at_end else None
            details_now: JSON = changes.get("cancellation_details") or subscription["cancellation_details"]
            changes["cancellation_details"] = {**details_now, "reason": "cancellation_requested" if at_end else None}
        return self._update(subscription, changes, "customer.subscription.updated")

    def _cancellation_details(self, details: JSON, current: JSON) -> JSON:
        _allow(details, ("comment", "feedback"), "cancellation_details")
        feedback = _enum(
            details,
            "feedback",
            (
                "customer_service",
                "low_quality",
                "missing_features",
                "other",
                "switched_service",
                "too_complex",
                "too_expensive",
                "unused",
            ),
            prefix="cancellation_details",
        )
        result = dict(current)
        if "comment" in details:
            result["comment"] = _str(details, "comment", prefix="cancellation_details") or None
        if "feedback" in details:
            result["feedback"] = feedback or None
        return result

    def _cancel_subscription(self, params: JSON, subscription_id: str) -> JSON:
        subscription = self._objects.get(subscription_id)
        if subscription is None or subscription["object"] != "subscription" or subscription["status"] == "canceled":
            raise _no_such("subscription", subscription_id)  # Stripe answers a canceled one as missing
        _allow(params, ("cancellation_details", "invoice_now", "prorate"))
        if _bool(params, "invoice_now"):
            raise _ApiError(400, "invoice_now=true (a final invoice) is not modelled by the Stripe fake.", param="invoice_now")
        _bool(params, "prorate")
        details = _hash(params, "cancellation_details")
        if details is not None:
            subscription["cancellation_details"] = self._cancellation_details(details, subscription["cancellation_details"])
        return self._end(subscription, "cancellation_requested")

    def _end(self, subscription: JSON, reason: str) -> JSON:
        now = self._now()
        subscription.update(
            status="canceled",
            canceled_at=subscription["canceled_at"] or now,
            ended_at=now,
            cancellation_details={**subscription["cancellation_details"], "reason": reason},
        )
        self._emit("customer.subscription.deleted", subscription)
        return subscription

    def _list_invoices(self, params: JSON) -> JSON:
        _allow(
            params,
            ("collection_method", "created", "customer", "ending_before", "limit", "starting_after", "status", "subscription"),
        )
        filters = {
            "customer": _str(params, "customer"),
            "status": _str(params, "status"),
            "collection_method": _str(params, "collection_method"),
        }
        subscription_id = _str(params, "subscription")
        invoices = [
            obj
            for obj in self._objects.values()
            if obj["object"] == "invoice"
            and all(value is None or obj[name] == value for name, value in filters.items())
            and (subscription_id is None or obj["parent"]["subscription_details"]["subscription"] == subscription_id)
        ]
        return self._paginate(params, invoices, "/v1/invoices")

    # --- billing meters -------------------------------------------------------------------------------------------

    def _create_meter(self, params: JSON) -> JSON:
        _allow(
            params,
            ("customer_mapping", "default_aggregation", "display_name", "event_name", "event_time_window", "value_settings"),
        )
        display_name = _str(params, "display_name", required=True)
        event_name = _str(params, "event_name", required=True) or ""
        aggregation = _hash(params, "default_aggregation", required=True) or {}
        _allow(aggregation, ("formula",), "default_aggregation")
        formula = _enum(aggregation, "formula", ("count", "last", "sum"), prefix="default_aggregation", required=True)
        mapping = _hash(params, "customer_mapping") or {}
        _allow(mapping, ("event_payload_key", "type"), "customer_mapping")
        customer_key = _str(mapping, "event_payload_key", prefix="customer_mapping") or "stripe_customer_id"
        mapping_type = _enum(mapping, "type", ("by_id",), prefix="customer_mapping") or "by_id"
        values = _hash(params, "value_settings") or {}
        _allow(values, ("event_payload_key",), "value_settings")
        value_key = _str(values, "event_payload_key", prefix="value_settings") or "value"
        window = _enum(params, "event_time_window", ("day", "hour"))
        if self._meter_for(event_name) is not None:
            raise _ApiError(
                400, f"An active meter with event_name `{event_name}` already exists.", param="event_name"
            )  # wording approximate
        now = self._now()
        meter = self._base(
            "mtr_",
            "billing.meter",
            customer_mapping={"event_payload_key": customer_key, "type": mapping_type},
            default_aggregation={"formula": formula},
            display_name=display_name,
            event_name=event_name,
            event_time_window=window,
            status="active",
            status_transitions={"deactivated_at": None},
            updated=now,
            value_settings={"event_payload_key": value_key},
        )
        return self._store(meter)

    def _meter_for(self, event_name: str) -> JSON | None:
        for obj in self._objects.values():
            if obj["object"] == "billing.meter" and obj["event_name"] == event_name and obj["status"] == "active":
                return obj
        return None

    def _list_meters(self, params: JSON) -> JSON:
        _allow(params, ("ending_before", "limit", "starting_after", "status"))
        status = _enum(params, "status", ("active", "inactive"))
        meters = [obj for obj in self._objects.values() if obj["object"] == "billing.meter" and status in (None, obj["status"])]
        return self._paginate(params, meters, "/v1/billing/meters")

    def _create_meter_event(self, params: JSON) -> JSON:
        _allow(params, ("event_name", "identifier", "payload", "timestamp"))
        event_name = _str(params, "event_name", required=True)
        payload = _hash(params, "payload", required=True) or {}
        for key, value in payload.items():
            if not isinstance(value, str):
                raise _ApiError(400, "Invalid hash", param=f"payload[{key}]")
        identifier = _str(params, "identifier") or _new_id("")
        now = self._now()
        timestamp = _int(params, "timestamp")
        timestamp = now if timestamp is None else timestamp
        if not now - _METER_BACKDATE_LIMIT <= timestamp <= now + _METER_FUTURE_LIMIT:
            raise _ApiError(
                400,
                "Timestamp must be within the past 35 calendar days or up to 5 minutes in the future.",
                param="timestamp",
            )  # wording approximate
        if any(event["identifier"] == identifier for event in self._meter_events):
            # Stripe refuses (does not silently drop) a repeated identifier; no code, not retryable.
            raise _ApiError(400, f"An event already exists with identifier {identifier}.")
        event = {
            "object": "billing.meter_event",
            "created": now,
            "event_name": event_name,
            "identifier": identifier,
            "livemode": False,
            "payload": dict(payload),
            "timestamp": timestamp,
        }
        self._meter_events.append(event)
        self._created["billing.meter_event"] += 1
        return event

    # --- portal and events ----------------------------------------------------------------------------------------

    def _create_portal_session(self, params: JSON) -> JSON:
        _allow(params, ("configuration", "customer", "locale", "return_url"))
        customer_id = _str(params, "customer", required=True) or ""
        self._find("customer", customer_id, param="customer", status=400)
        session = self._base(
            "bps_",
            "billing_portal.session",
            configuration=_str(params, "configuration") or "bpc_" + _random(24),
            customer=customer_id,
            flow=None,
            locale=_str(params, "locale") or None,
            on_behalf_of=None,
            return_url=_str(params, "return_url") or None,
        )
        session["url"] = f"{self.base_url}/portal/{session['id']}"
        return self._store(session)

    def _list_events(self, params: JSON) -> JSON:
        _allow(params, ("created", "ending_before", "limit", "starting_after", "type", "types"))
        event_type = _str(params, "type")
        types = [str(name) for name in _list(params, "types")]
        if event_type and types:
            raise _ApiError(400, "You may only specify one of these parameters: type, types.")
        if len(types) > 20:
            raise _ApiError(400, "You may only specify up to 20 types.", param="types")  # wording approximate
        patterns = [re.compile(re.escape(name).replace(r"\*", ".*")) for name in ([event_type] if event_type else types)]
        events = [
            obj
            for obj in self._objects.values()
            if obj["object"] == "event" and (not patterns or any(pattern.fullmatch(obj["type"]) for pattern in patterns))
        ]
        return self._paginate(params, events, "/v1/events")

    # --- browser pages: hosted Checkout and portal stand-ins ------------------------------------------------------

    def _page(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """`GET /pay/{id}` shows a pay button; `POST /pay/{id}` completes the session and redirects to success_url."""
        kind, _, object_id = path.strip("/").partition("/")
        obj = self._objects.get(object_id)
        text = {"Content-Type": "text/html; charset=utf-8"}
        if kind == "portal" and obj is not None and obj["object"] == "billing_portal.session" and method == "GET":
            back = html.escape(obj["return_url"] or "")
            page = f"<h1>Billing portal (Stripe fake)</h1><p>{html.escape(obj['customer'])}</p><a href='{back}'>Return</a>"
            return 200, text, page.encode()
        if kind != "pay" or obj is None or obj["object"] != "checkout.session":
            return 404, text, b"<h1>Not found</h1>"
        if method == "GET":
            amount = html.escape(_money(obj["amount_total"], obj["currency"]))
            page = (
                f"<h1>Checkout (Stripe fake)</h1><p>{amount}</p><p>Status: {html.escape(obj['status'])}</p>"
                f"<form method='post'><button type='submit'>Pay</button></form>"
            )
            return 200, text, page.encode()
        if obj["status"] != "open":
            return 409, text, f"<p>Session is {html.escape(obj['status'])}</p>".encode()
        self.complete_checkout(object_id)
        target = (obj["success_url"] or "").replace("{CHECKOUT_SESSION_ID}", object_id)
        if not target:
            return 200, text, b"<p>Paid</p>"
        return 303, {**text, "Location": target}, b""


class _Handler(BaseHTTPRequestHandler):
    """Hands each request to its StripeFake."""

    owner: StripeFake
    server_version = "stripe-fake"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, out, data = self.owner._handle(self.command, self.path, headers, body)
        self.send_response(status)
        for name, value in out.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no line per request on stderr."""


# --- small helpers ------------------------------------------------------------------------------------------------


def _random(length: int, alphabet: str = _ALPHABET) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _new_id(prefix: str) -> str:
    return prefix + _random(58 if prefix == "cs_test_" else 24)


def _list_object(data: list[JSON], url: str, *, has_more: bool) -> JSON:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def _in_bounds(value: int, bounds: dict[str, int | None]) -> bool:
    gt, gte, lt, lte = bounds.get("gt"), bounds.get("gte"), bounds.get("lt"), bounds.get("lte")
    return (
        (gt is None or value > gt)
        and (gte is None or value >= gte)
        and (lt is None or value < lt)
        and (lte is None or value <= lte)
    )


def _currency(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{3}", value):
        raise _ApiError(400, f"Invalid currency: {value.lower()}.", param="currency")  # wording approximate
    return value.lower()


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)


def _stripe_fee(amount: int) -> int:
    return int((Decimal(amount) * _STRIPE_FEE_RATE).to_integral_value(ROUND_HALF_UP)) + _STRIPE_FEE_FIXED


def _plan(price: JSON) -> JSON:
    """The legacy `plan` a subscription item still carries beside its `price`."""
    recurring = price["recurring"]
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring["interval"],
        "interval_count": recurring["interval_count"],
        "livemode": False,
        "metadata": dict(price["metadata"]),
        "meter": recurring["meter"],
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": recurring["trial_period_days"],
        "usage_type": recurring["usage_type"],
    }
