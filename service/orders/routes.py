"""HTTP for orders."""

from __future__ import annotations

from typing import Any

from flask import g, url_for
from flask.views import MethodView

from service.api import Blueprint
from service.auth.decorators import owner_scope, require_api_key
from service.auth.models import Scope
from service.orders import service as orders
from service.orders.schemas import (
    IdempotencyHeadersSchema,
    OrderCreateSchema,
    OrderListArgsSchema,
    OrderPageSchema,
    OrderSchema,
)
from service.pagination import link_headers

blp = Blueprint("orders", __name__, url_prefix="/api/v1/orders", description="Orders")

ORDER_ID = "<int(min=1, max=2147483647):order_id>"
PLACED_HEADERS = {
    "Location": {"description": "The order's path", "schema": {"type": "string"}},
    "Idempotent-Replayed": {
        "description": "`true` when this answers a retry with the same Idempotency-Key: the "
        "order was placed by the first request, not by this one",
        "schema": {"type": "string", "enum": ["true"]},
    },
}


@blp.route("")
class Orders(MethodView):
    @require_api_key(blp, Scope.CUSTOMER, Scope.OPERATOR)
    @blp.arguments(OrderListArgsSchema(), location="query")
    @blp.response(200, OrderPageSchema)
    @blp.doc(operationId="listOrders")
    def get(self, args: dict[str, Any]) -> Any:
        """List this API key's orders (an operator key: everyone's), newest first"""
        page = orders.list_orders(**args, owner=owner_scope())
        return page, link_headers(page.next_cursor)

    @require_api_key(blp, Scope.CUSTOMER)
    @blp.arguments(OrderCreateSchema())
    @blp.arguments(IdempotencyHeadersSchema(), location="headers")
    @blp.response(201, OrderSchema, headers=PLACED_HEADERS)
    @blp.alt_response(402, response="PAYMENT_REQUIRED", description="Payment declined")
    @blp.alt_response(
        409, response="CONFLICT", description="Not enough stock, or cancelled during payment"
    )
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE", description="Payment undecided")
    @blp.doc(operationId="placeOrder")
    def post(self, data: dict[str, Any], headers: dict[str, Any]) -> Any:
        """Place an order: reserve stock, take payment"""
        placed = orders.place_order(
            **data, idempotency_key=headers["idempotency_key"], api_key_id=g.api_key.id
        )
        answer = {"Location": url_for(".OrderById", order_id=placed.order["id"])}
        if placed.replayed:
            answer["Idempotent-Replayed"] = "true"  # as Stripe says it
        return placed.order, answer


@blp.route(f"/{ORDER_ID}")
class OrderById(MethodView):
    @require_api_key(blp, Scope.CUSTOMER, Scope.OPERATOR)
    @blp.response(200, OrderSchema)
    @blp.alt_response(404, response="NOT_FOUND", description="No such order for this key")
    @blp.doc(operationId="getOrder")
    def get(self, order_id: int) -> Any:
        """Get one of this API key's orders"""
        return orders.get_order(order_id=order_id, owner=owner_scope())


@blp.route(f"/{ORDER_ID}/cancel")
class OrderCancel(MethodView):
    @require_api_key(blp, Scope.CUSTOMER, Scope.OPERATOR)
    @blp.response(200, OrderSchema)
    @blp.alt_response(404, response="NOT_FOUND", description="No such order for this key")
    @blp.alt_response(409, response="CONFLICT", description="Already cancelled or failed")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE", description="Payment not released")
    @blp.doc(operationId="cancelOrder")
    def post(self, order_id: int) -> Any:
        """Cancel an order: void or refund its payment, then put its stock back"""
        return orders.cancel_order(order_id=order_id, owner=owner_scope())
