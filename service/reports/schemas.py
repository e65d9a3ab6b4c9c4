from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import marshmallow as ma

from service.fields import MAX_SUM, MoneyField, StrictSchema
from service.reports.service import default_start

GROUPINGS = ("day", "product", "category")
MAX_RANGE_DAYS = 3660


class SalesReportArgsSchema(StrictSchema):
    start = ma.fields.Date(
        data_key="from",
        load_default=None,
        metadata={"description": "First day (UTC), inclusive; default 30 days before `to`"},
    )
    end = ma.fields.Date(
        data_key="to",
        load_default=None,
        metadata={"description": "Last day (UTC), inclusive; default today"},
    )
    group_by = ma.fields.String(load_default="day", validate=ma.validate.OneOf(GROUPINGS))

    @ma.validates_schema
    def _range(self, data: dict[str, Any], **kwargs: Any) -> None:
        # The defaults count too: `from` alone must not open a range of centuries.
        end = data.get("end") or datetime.now(UTC).date()
        start = data.get("start") or default_start(end)
        if start > end:
            raise ma.ValidationError("`from` must not be after `to`.", "from")
        if end - start > timedelta(days=MAX_RANGE_DAYS):
            raise ma.ValidationError(f"The range is limited to {MAX_RANGE_DAYS} days.", "from")


class SalesFiguresSchema(ma.Schema):
    orders = ma.fields.Integer(metadata={"description": "Paid orders counted"})
    units = ma.fields.Integer(metadata={"description": "Units sold"})
    revenue = MoneyField(maximum=MAX_SUM)
    average = MoneyField(metadata={"description": "Mean value"})
    p50 = MoneyField()
    p90 = MoneyField()
    p99 = MoneyField()


class SalesGroupSchema(SalesFiguresSchema):
    key = ma.fields.String(metadata={"description": "Day (YYYY-MM-DD), product id or category id"})
    label = ma.fields.String()


class SalesReportSchema(ma.Schema):
    start = ma.fields.Date(data_key="from")
    end = ma.fields.Date(data_key="to")
    group_by = ma.fields.String()
    totals = ma.fields.Nested(SalesFiguresSchema)
    groups = ma.fields.List(ma.fields.Nested(SalesGroupSchema))
