"""HTTP for reports, and the lab's own report route (registered only with LAB_ROUTES)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from service.api import Blueprint
from service.auth.decorators import require_api_key
from service.auth.models import Scope
from service.reports import reference
from service.reports import service as reports
from service.reports.schemas import SalesReportArgsSchema, SalesReportSchema
from service.representations import renderer, respond

SALES_REPORT = renderer(SalesReportSchema(), body_etag=True)

blp = Blueprint("reports", __name__, url_prefix="/api/v1/reports", description="Sales reports")
lab = Blueprint(
    "lab", __name__, url_prefix="/lab", description="Experiments of the profiling lab only"
)


@blp.route("/sales")
class SalesReport(MethodView):
    @require_api_key(blp, Scope.OPERATOR)
    @blp.etag
    @blp.arguments(SalesReportArgsSchema(), location="query")
    @blp.response(200, SalesReportSchema)
    @blp.doc(operationId="getSalesReport")
    def get(self, args: dict[str, Any]) -> Any:
        """Sales per day, product or category: totals, counts and percentiles"""
        return respond(reports.sales_report(**args, render=SALES_REPORT))


@lab.route("/sales-in-python")
class SalesReportInPython(MethodView):
    @lab.arguments(SalesReportArgsSchema(), location="query")
    @lab.response(200, SalesReportSchema)
    def get(self, args: dict[str, Any]) -> Any:
        """The sales report computed in Python from every row, uncached: a CPU-bound target"""
        return reference.sales_report(**args)
