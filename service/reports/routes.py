"""HTTP for reports."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from service.api import Blueprint
from service.auth.decorators import require_api_key
from service.auth.models import Scope
from service.reports import service as reports
from service.reports.schemas import SalesReportArgsSchema, SalesReportSchema

blp = Blueprint("reports", __name__, url_prefix="/api/v1/reports", description="Sales reports")


@blp.route("/sales")
class SalesReport(MethodView):
    @require_api_key(blp, Scope.OPERATOR)
    @blp.arguments(SalesReportArgsSchema(), location="query")
    @blp.response(200, SalesReportSchema)
    @blp.doc(operationId="getSalesReport")
    def get(self, args: dict[str, Any]) -> Any:
        """Sales per day, product or category: totals, counts and percentiles"""
        return reports.sales_report(**args)
