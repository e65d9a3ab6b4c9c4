"""HTTP for orders."""

from __future__ import annotations

from typing import Any

from flask import g
from flask.views import MethodView

from service.api import Blueprint
from service.auth.decorators import require_api_key
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


@blp.route("")
class Orders(MethodView):
    @blp.arguments(OrderListArgsSchema, location="query")
    @blp.response(200, OrderPageSchema)
    @blp.doc(operationId="listOrders")
    def get(self, args: dict[str, Any]) -> Any:
        """List orders, newest first"""
        page = orders.list_orders(**args)
        return page, link_headers(page)

    @require_api_key(blp)
    @blp.arguments(OrderCreateSchema)
    @blp.arguments(IdempotencyHeadersSchema, location="headers")
    @blp.response(201, OrderSchema)
    @blp.alt_response(409, response="CONFLICT", description="Not enough stock")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE", description="Payment undecided")
    @blp.doc(operationId="placeOrder")
    def post(self, data: dict[str, Any], headers: dict[str, Any]) -> Any:
        """Place an order: reserve stock, take payment"""
        return orders.place_order(
            **data, idempotency_key=headers["idempotency_key"], api_key_id=g.api_key.id
        )


@blp.route(f"/{ORDER_ID}")
class OrderById(MethodView):
    @blp.response(200, OrderSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.doc(operationId="getOrder")
    def get(self, order_id: int) -> Any:
        """Get an order"""
        return orders.get_order(order_id=order_id)


@blp.route(f"/{ORDER_ID}/cancel")
class OrderCancel(MethodView):
    @require_api_key(blp)
    @blp.response(200, OrderSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT", description="Already cancelled")
    @blp.doc(operationId="cancelOrder")
    def post(self, order_id: int) -> Any:
        """Cancel an order and put its stock back"""
        return orders.cancel_order(order_id=order_id)
