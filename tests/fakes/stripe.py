"""A local stand-in for the parts of Stripe's API the top-ups use, plus builders for signed webhooks.

No stripe-mock binary can be installed here, so this in-process aiohttp server speaks Stripe's wire
format for POST /v1/checkout/sessions (form-encoded nested parameters in, Checkout Session JSON out,
Stripe's error shape and `Request-Id` header, idempotent replays); the real `stripe` SDK talks to it.

    fake = FakeStripe()
    await fake.start()
    client = stripe.StripeClient("sk_test_x", base_addresses={"api": fake.api_base},
                                 http_client=stripe.AIOHTTPClient())
    ...
    event = fake.complete(session_id)             # what Stripe would POST to the webhook
    payload = json.dumps(event).encode()
    header = sign(payload, "whsec_test")
    await fake.stop()
"""

from __future__ import annotations

import copy
import re
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any

import stripe
from aiohttp import web
from stripe._api_version import _ApiVersion

_KEY_PART = re.compile(r"\[([^\]]*)\]")


def random_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(length))


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header Stripe would send for this body, computed with the SDK's own signer."""
    return stripe.WebhookSignature.generate_signature_header(payload.decode(), secret, timestamp)


def parse_stripe_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Undo the SDK's form encoding: `line_items[0][price_data][unit_amount]=500` -> nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        path = [head] + (_KEY_PART.findall("[" + rest) if rest else [])
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return _lists_from_indexed_dicts(root)


def _lists_from_indexed_dicts(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _lists_from_indexed_dicts(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    params: dict[str, Any]


@dataclass
class _Failure:
    status: int
    type: str
    message: str
    code: str | None


@dataclass
class FakeStripe:
    prices: dict[str, tuple[int, str]] = field(default_factory=dict)  # Price id -> (unit_amount, currency)
    requests: list[Received] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_intents: dict[str, dict[str, Any]] = field(default_factory=dict)  # created with POST /v1/payment_intents
    # What an off-session payment with a saved card does next: "succeeded", "card_declined",
    # "authentication_required" (the card's bank wants the customer present) or "processing" (decided later:
    # see `finish_processing`).
    next_off_session_outcome: str = "succeeded"
    api_base: str = ""

    sign = staticmethod(sign)  # also reachable as fake.sign(payload, secret)

    def __post_init__(self) -> None:
        self._idempotent: dict[str, tuple[dict, int, dict]] = {}  # key -> (params, status, body)
        self._failures: list[_Failure] = []
        self._runner: web.AppRunner | None = None

    # --- server -----------------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/checkout/sessions", self._create_session)
        app.router.add_get("/v1/checkout/sessions/{id}", self._retrieve_session)
        app.router.add_get("/v1/payment_intents/{id}", self._retrieve_payment_intent)
        app.router.add_post("/v1/payment_intents", self._create_payment_intent)
        app.router.add_post("/v1/customers", self._create_customer)
        app.router.add_get("/v1/balance", self._retrieve_balance)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.api_base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeStripe:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def fail_next(
        self,
        status: int = 500,
        type: str = "api_error",
        message: str = "Something went wrong on Stripe's end.",
        code: str | None = None,
    ) -> None:
        """The next API request fails like this. Like a failure before Stripe executed anything, it is
        not stored under the request's idempotency key, so the SDK's retry can succeed."""
        self._failures.append(_Failure(status, type, message, code))

    # --- handlers ---------------------------------------------------------------------------------
    async def _create_session(self, request: web.Request) -> web.Response:
        return await self._idempotent_post(request, self._new_session)

    async def _idempotent_post(self, request: web.Request, create) -> web.Response:
        """A POST as Stripe runs it: authenticated, failing if told to, replayed for a repeated idempotency key."""
        params = parse_stripe_form(list((await request.post()).items()))
        self.requests.append(Received(request.method, request.path, dict(request.headers), params))
        if (denied := self._check_auth(request)) is not None:
            return denied
        if self._failures:
            failure = self._failures.pop(0)
            return _error(failure.status, failure.type, failure.message, failure.code)
        key = request.headers.get("Idempotency-Key")
        if key and key in self._idempotent:
            first_params, status, body = self._idempotent[key]
            if first_params != params:
                return _error(
                    400,
                    "idempotency_error",
                    f"Keys for idempotent requests can only be used with the same parameters they were first "
                    f"used with. Try using a key other than '{key}' if you meant to execute a different request.",
                )
            return _json(status, body, replayed=True)
        status, body = create(params)
        if key:
            self._idempotent[key] = (params, status, body)
        return _json(status, body)

    async def _create_customer(self, request: web.Request) -> web.Response:
        def create(params: dict[str, Any]) -> tuple[int, dict]:
            customer = {
                "id": random_id("cus_", 14),
                "object": "customer",
                "created": int(time.time()),
                "livemode": False,
                "metadata": params.get("metadata", {}),
                "name": params.get("name"),
                "email": params.get("email"),
                "_payment_methods": [],
            }
            self.customers[customer["id"]] = customer
            return 200, _public(customer)

        return await self._idempotent_post(request, create)

    async def _create_payment_intent(self, request: web.Request) -> web.Response:
        """Off-session payments with a saved card (`confirm=true`, `off_session=true`): they succeed, or fail
        with a card_error (402) whose body carries the PaymentIntent, as Stripe answers."""

        def create(params: dict[str, Any]) -> tuple[int, dict]:
            customer = self.customers.get(params.get("customer") or "")
            method = params.get("payment_method")
            if customer is None:
                return 400, _error_body(
                    "invalid_request_error", f"No such customer: '{params.get('customer')}'", "resource_missing"
                )
            if method not in customer["_payment_methods"]:
                return 400, _error_body(
                    "invalid_request_error", f"No such PaymentMethod: '{method}'", "resource_missing"
                )
            try:
                amount = int(params["amount"])
            except (KeyError, ValueError):
                return 400, _error_body("invalid_request_error", "Missing required param: amount.", "parameter_missing")
            if params.get("confirm") != "true" or params.get("off_session") != "true":
                return 400, _error_body(
                    "invalid_request_error", "This fake only confirms off-session payments.", "parameter_missing"
                )
            outcome, self.next_off_session_outcome = self.next_off_session_outcome, "succeeded"
            intent = {
                "id": random_id("pi_3"),
                "object": "payment_intent",
                "amount": amount,
                "amount_received": 0,
                "currency": params.get("currency"),
                "customer": customer["id"],
                "payment_method": method,
                "metadata": params.get("metadata", {}),
                "livemode": False,
                "created": int(time.time()),
                "status": "succeeded",
                "latest_charge": None,
                "last_payment_error": None,
                "description": params.get("description"),
            }
            self.payment_intents[intent["id"]] = intent
            if outcome == "succeeded":
                intent.update(amount_received=amount, latest_charge=random_id("ch_3"))
                return 200, dict(intent)
            if outcome == "processing":
                intent.update(status="processing")
                return 200, dict(intent)
            error = {
                "type": "card_error",
                "code": outcome,
                "message": {
                    "card_declined": "Your card was declined.",
                    "authentication_required": "Your card was declined. This transaction requires authentication.",
                }[outcome],
                "payment_intent": None,
            }
            if outcome == "card_declined":
                error["decline_code"] = "generic_decline"
            intent.update(
                status="requires_payment_method" if outcome == "card_declined" else "requires_action",
                last_payment_error={k: v for k, v in error.items() if k != "payment_intent"},
            )
            error["payment_intent"] = dict(intent)
            return 402, {"error": error}

        return await self._idempotent_post(request, create)

    def intent_charge(self, payment_intent_id: str, amount_refunded: int = 0) -> dict[str, Any]:
        """The charge of a succeeded off-session PaymentIntent."""
        intent = self.payment_intents[payment_intent_id]
        return {
            "id": intent["latest_charge"],
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": amount_refunded,
            "captured": True,
            "created": intent["created"],
            "currency": intent["currency"],
            "customer": intent["customer"],
            "disputed": False,
            "livemode": False,
            "metadata": dict(intent["metadata"]),
            "paid": True,
            "payment_intent": intent["id"],
            "refunded": amount_refunded == intent["amount"],
            "status": "succeeded",
            "receipt_url": f"https://pay.stripe.com/receipts/payment/{intent['id'][3:]}",
        }

    def intent_refund_event(self, payment_intent_id: str, amount_refunded: int) -> dict[str, Any]:
        return self.event("charge.refunded", self.intent_charge(payment_intent_id, amount_refunded))

    def finish_processing(self, payment_intent_id: str, *, succeeded: bool) -> dict[str, Any]:
        """A processing PaymentIntent is decided: its webhook event."""
        intent = self.payment_intents[payment_intent_id]
        if succeeded:
            intent.update(status="succeeded", amount_received=intent["amount"], latest_charge=random_id("ch_3"))
        else:
            intent.update(
                status="requires_payment_method",
                last_payment_error={
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": "insufficient_funds",
                    "message": "Your card has insufficient funds.",
                },
            )
        return self.payment_intent_event(payment_intent_id)

    def payment_intent_event(self, payment_intent_id: str) -> dict[str, Any]:
        """payment_intent.succeeded or payment_intent.payment_failed, as the PaymentIntent ended."""
        intent = self.payment_intents[payment_intent_id]
        kind = "succeeded" if intent["status"] == "succeeded" else "payment_failed"
        return self.event(f"payment_intent.{kind}", intent)

    async def _retrieve_session(self, request: web.Request) -> web.Response:
        self.requests.append(Received(request.method, request.path, dict(request.headers), dict(request.query)))
        if (denied := self._check_auth(request)) is not None:
            return denied
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return _error(
                404,
                "invalid_request_error",
                f"No such checkout.session: '{request.match_info['id']}'",
                "resource_missing",
            )
        return _json(200, session)

    async def _retrieve_payment_intent(self, request: web.Request) -> web.Response:
        """A Checkout payment's PaymentIntent; `expand[]=latest_charge` puts the charge (with its receipt_url)
        inline."""
        query = parse_stripe_form(list(request.query.items()))
        self.requests.append(Received(request.method, request.path, dict(request.headers), query))
        if (denied := self._check_auth(request)) is not None:
            return denied
        if self._failures:
            failure = self._failures.pop(0)
            return _error(failure.status, failure.type, failure.message, failure.code)
        created = self.payment_intents.get(request.match_info["id"])
        if created is not None:  # an off-session payment
            intent = dict(created)
            if intent["latest_charge"] and "latest_charge" in (query.get("expand") or []):
                intent["latest_charge"] = self.intent_charge(intent["id"])
            return _json(200, intent)
        session = next(
            (
                s
                for s in self.sessions.values()
                if s.get("_payment_intent") == request.match_info["id"] and s.get("payment_status") == "paid"
            ),
            None,
        )
        if session is None:
            return _error(
                404,
                "invalid_request_error",
                f"No such payment_intent: '{request.match_info['id']}'",
                "resource_missing",
            )
        charge = self.charge(session["id"])
        expand = query.get("expand") or []
        intent = {
            "id": session["_payment_intent"],
            "object": "payment_intent",
            "amount": session["amount_total"],
            "amount_received": session["amount_total"],
            "currency": session["currency"],
            "status": "succeeded",
            "livemode": False,
            "metadata": dict(session["_payment_intent_metadata"]),
            "latest_charge": charge if "latest_charge" in expand else charge["id"],
            "customer": session.get("customer"),
            "payment_method": session.get("_payment_method"),
            "setup_future_usage": session.get("_setup_future_usage"),
        }
        return _json(200, intent)

    async def _retrieve_balance(self, request: web.Request) -> web.Response:
        """GET /v1/balance: what `python -m bot check` asks to learn that the key is accepted (it changes nothing)."""
        self.requests.append(Received(request.method, request.path, dict(request.headers), {}))
        if (denied := self._check_auth(request)) is not None:
            return denied
        if self._failures:
            failure = self._failures.pop(0)
            return _error(failure.status, failure.type, failure.message, failure.code)
        money = [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}]
        return _json(200, {"object": "balance", "available": money, "pending": money, "livemode": False})

    async def _unknown(self, request: web.Request) -> web.Response:
        return _error(404, "invalid_request_error", f"Unrecognized request URL ({request.method}: {request.path}).")

    def _check_auth(self, request: web.Request) -> web.Response | None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not token.startswith(("sk_test_", "sk_live_", "rk_test_")):
            return _error(401, "invalid_request_error", f"Invalid API Key provided: {_mask(token)}")
        return None

    def _new_session(self, params: dict[str, Any]) -> tuple[int, dict]:
        if params.get("mode") != "payment":
            return 400, _error_body(
                "invalid_request_error", "This fake only supports mode=payment.", "parameter_missing"
            )
        if not params.get("success_url"):
            return 400, _error_body(
                "invalid_request_error", "Missing required param: success_url.", "parameter_missing"
            )
        now = int(time.time())
        expires_at = int(params.get("expires_at", now + 86400))
        if not now + 1800 <= expires_at <= now + 86400:
            return 400, _error_body(
                "invalid_request_error",
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from now.",
                "parameter_invalid_integer",
            )
        amount_total, currency = 0, None
        for item in params.get("line_items") or []:
            quantity = int(item.get("quantity", 1))
            if "price" in item:
                if item["price"] not in self.prices:
                    return 400, _error_body(
                        "invalid_request_error", f"No such price: '{item['price']}'", "resource_missing"
                    )
                unit_amount, currency = self.prices[item["price"]]
            else:
                unit_amount, currency = int(item["price_data"]["unit_amount"]), item["price_data"]["currency"]
            amount_total += unit_amount * quantity
        if currency is None:
            return 400, _error_body("invalid_request_error", "Missing required param: line_items.", "parameter_missing")

        session_id = random_id("cs_test_a1", 56)
        session = {
            "id": session_id,
            "object": "checkout.session",
            "after_expiration": None,
            "allow_promotion_codes": None,
            "amount_subtotal": amount_total,
            "amount_total": amount_total,
            "automatic_tax": {"enabled": False, "liability": None, "status": None},
            "billing_address_collection": None,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "client_secret": None,
            "consent": None,
            "created": now,
            "currency": currency,
            "customer": params.get("customer"),
            "customer_creation": "if_required",
            "customer_details": None,
            "customer_email": None,
            "expires_at": expires_at,
            "invoice": None,
            "livemode": False,
            "locale": None,
            "metadata": params.get("metadata", {}),
            "mode": "payment",
            "payment_intent": None,
            "payment_link": None,
            "payment_method_collection": "if_required",
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "status": "open",
            "success_url": params["success_url"],
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted",
            "url": f"https://checkout.stripe.com/c/pay/{session_id}#fidkdWxOYHwnPyd1blpxYHZxWjA0",
        }
        # Kept for the charge objects of refunds and disputes (underscore keys never leave the fake).
        session["_payment_intent_metadata"] = params.get("payment_intent_data", {}).get("metadata", {})
        session["_setup_future_usage"] = params.get("payment_intent_data", {}).get("setup_future_usage")
        if params.get("customer") and params["customer"] not in self.customers:
            return 400, _error_body(
                "invalid_request_error", f"No such customer: '{params['customer']}'", "resource_missing"
            )
        self.sessions[session_id] = session
        return 200, _public(session)

    # --- webhook events, as Stripe would send them ------------------------------------------------
    def event(self, type: str, obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": random_id("evt_1"),
            "object": "event",
            "api_version": _ApiVersion.CURRENT,
            "created": int(time.time()),
            "data": {"object": copy.deepcopy(_public(obj))},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type,
        }

    def complete(self, session_id: str, paid: bool = True) -> dict[str, Any]:
        """checkout.session.completed: paid by card, or "unpaid" for a delayed method (bank debit)."""
        session = self._pay(session_id, "paid" if paid else "unpaid")
        return self.event("checkout.session.completed", session)

    def async_payment_succeeded(self, session_id: str) -> dict[str, Any]:
        return self.event("checkout.session.async_payment_succeeded", self._pay(session_id, "paid"))

    def async_payment_failed(self, session_id: str) -> dict[str, Any]:
        return self.event("checkout.session.async_payment_failed", self._pay(session_id, "unpaid"))

    def expire(self, session_id: str) -> dict[str, Any]:
        session = self.sessions[session_id]
        session["status"] = "expired"
        return self.event("checkout.session.expired", session)

    def charge(self, session_id: str, amount_refunded: int = 0) -> dict[str, Any]:
        session = self.sessions[session_id]
        amount = session["amount_total"]
        return {
            "id": session.setdefault("_charge_id", random_id("ch_3")),
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": amount_refunded,
            "captured": True,
            "created": session["created"],
            "currency": session["currency"],
            "disputed": False,
            "livemode": False,
            "metadata": dict(session["_payment_intent_metadata"]),
            "paid": True,
            "payment_intent": self._payment_intent(session),
            "refunded": amount_refunded == amount,
            "status": "succeeded",
            "receipt_url": "https://pay.stripe.com/receipts/payment/"
            f"{session.setdefault('_receipt', random_id('CAcaFwoV'))}",
        }

    def refund_event(self, session_id: str, amount_refunded: int) -> dict[str, Any]:
        """charge.refunded; `amount_refunded` is the running total over all refunds of the charge."""
        return self.event("charge.refunded", self.charge(session_id, amount_refunded))

    def dispute_event(self, session_id: str, stage: str, status: str | None = None) -> dict[str, Any]:
        """charge.dispute.created (status needs_response) or charge.dispute.closed (status won/lost/...)."""
        if stage not in ("created", "closed"):
            raise ValueError("stage is 'created' or 'closed'")
        session = self.sessions[session_id]
        charge = self.charge(session_id)
        dispute = {
            "id": session.setdefault("_dispute_id", random_id("dp_1")),
            "object": "dispute",
            "amount": charge["amount"],
            "charge": charge["id"],
            "created": int(time.time()),
            "currency": charge["currency"],
            "is_charge_refundable": False,
            "livemode": False,
            "metadata": {},
            "payment_intent": charge["payment_intent"],
            "reason": "fraudulent",
            "status": status or ("needs_response" if stage == "created" else "lost"),
        }
        return self.event(f"charge.dispute.{stage}", dispute)

    def _pay(self, session_id: str, payment_status: str) -> dict[str, Any]:
        session = self.sessions[session_id]
        session.update(
            status="complete",
            payment_status=payment_status,
            payment_intent=self._payment_intent(session),
            customer_details={"email": "buyer@example.com", "name": "Test Buyer"},
        )
        if payment_status == "paid" and "_payment_method" not in session:
            session["_payment_method"] = random_id("pm_1")
            customer = self.customers.get(session.get("customer") or "")
            if customer is not None and session.get("_setup_future_usage") == "off_session":
                customer["_payment_methods"].append(session["_payment_method"])  # saved for off-session payments
        return session

    @staticmethod
    def _payment_intent(session: dict[str, Any]) -> str:
        return session.setdefault("_payment_intent", random_id("pi_3"))


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without the fake's own bookkeeping keys (they start with an underscore)."""
    return {key: value for key, value in obj.items() if not key.startswith("_")}


def _mask(key: str) -> str:
    return key[:8] + "*" * 12 + key[-4:] if len(key) > 12 else "****"


def _error_body(type: str, message: str, code: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type, "message": message}
    if code:
        error["code"] = code
    return {"error": error}


def _error(status: int, type: str, message: str, code: str | None = None) -> web.Response:
    return _json(status, _error_body(type, message, code))


def _json(status: int, body: dict[str, Any], replayed: bool = False) -> web.Response:
    headers = {"Request-Id": random_id("req_", 14), "Stripe-Version": _ApiVersion.CURRENT}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return web.json_response(body, status=status, headers=headers)
