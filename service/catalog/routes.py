"""HTTP for categories and products: parse with a schema, call the service, dump a schema.

Reads answer cached representations (service/representations.py): the service caches what
the `render` given here makes of its data, the body's bytes and ETag, so a cache hit sends
them as they are. The decorators still describe those responses in the OpenAPI document.
"""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView

from service.api import Blueprint
from service.auth.decorators import require_api_key
from service.auth.models import Scope
from service.catalog import service as catalog
from service.catalog.schemas import (
    CategoryPageSchema,
    CategorySchema,
    CategoryUpdateSchema,
    ProductListArgsSchema,
    ProductPageSchema,
    ProductSchema,
    ProductUpdateSchema,
)
from service.pagination import ListArgsSchema, link_headers
from service.representations import Representation, page_renderer, renderer, respond
from service.version import __version__

ID = "<int(min=1, max=2147483647):{}>"
LOCATION = {"description": "The new resource's path", "schema": {"type": "string"}}


def version_of(row: dict[str, Any]) -> dict[str, Any]:
    """What a resource's ETag is computed from: every change moves `updated_at`.

    Cheaper than hashing the whole representation, and a 304 then skips serialising it.
    """
    return {"id": row["id"], "updated_at": row["updated_at"].isoformat(), "v": __version__}


def _page_response(page: Representation) -> Any:
    return respond(page, headers=link_headers(page.next_cursor))


CATEGORY = renderer(CategorySchema(), version=version_of)
CATEGORY_PAGE = page_renderer(CategoryPageSchema())
PRODUCT = renderer(ProductSchema(), version=version_of)
PRODUCT_PAGE = page_renderer(ProductPageSchema())


def written(blp: Blueprint, row: dict[str, Any], *, location: str | None = None) -> Any:
    """A write's answer: the row with its ETag (the one a GET of it then gives) and, on a
    201, the new resource's Location."""
    blp.set_etag(version_of(row))
    return (row, {"Location": location}) if location else row


categories = Blueprint(
    "categories", __name__, url_prefix="/api/v1/categories", description="Product categories"
)
products = Blueprint("products", __name__, url_prefix="/api/v1/products", description="Products")


@categories.route("")
class Categories(MethodView):
    @categories.arguments(ListArgsSchema(), location="query")
    @categories.response(200, CategoryPageSchema)
    @categories.doc(operationId="listCategories")
    def get(self, args: dict[str, Any]) -> Any:
        """List categories"""
        return _page_response(catalog.list_categories(**args, render=CATEGORY_PAGE))

    @require_api_key(categories, Scope.OPERATOR)
    @categories.etag
    @categories.arguments(CategorySchema())
    @categories.response(201, CategorySchema, headers={"Location": LOCATION})
    @categories.alt_response(409, response="CONFLICT")
    @categories.doc(operationId="createCategory")
    def post(self, data: dict[str, Any]) -> Any:
        """Create a category"""
        category = catalog.create_category(**data)
        location = url_for(".CategoryById", category_id=category["id"])
        return written(categories, category, location=location)


@categories.route(f"/{ID.format('category_id')}")
class CategoryById(MethodView):
    @categories.etag
    @categories.response(200, CategorySchema)
    @categories.alt_response(404, response="NOT_FOUND")
    @categories.doc(operationId="getCategory")
    def get(self, category_id: int) -> Any:
        """Get a category"""
        return respond(catalog.get_category(category_id=category_id, render=CATEGORY))

    @require_api_key(categories, Scope.OPERATOR)
    @categories.etag
    @categories.arguments(CategoryUpdateSchema())
    @categories.response(200, CategorySchema)
    @categories.alt_response(404, response="NOT_FOUND")
    @categories.alt_response(409, response="CONFLICT")
    @categories.doc(operationId="updateCategory")
    def patch(self, changes: dict[str, Any], category_id: int) -> Any:
        """Change a category"""
        check = categories.precondition(f"Category {category_id}", version_of)
        category = catalog.update_category(category_id=category_id, precondition=check, **changes)
        return written(categories, category)

    @require_api_key(categories, Scope.OPERATOR)
    @categories.etag
    @categories.response(204)
    @categories.alt_response(404, response="NOT_FOUND")
    @categories.alt_response(409, response="CONFLICT")
    @categories.doc(operationId="deleteCategory")
    def delete(self, category_id: int) -> None:
        """Delete a category that has no products"""
        check = categories.precondition(f"Category {category_id}", version_of)
        catalog.delete_category(category_id=category_id, precondition=check)


@products.route("")
class Products(MethodView):
    @products.arguments(ProductListArgsSchema(), location="query")
    @products.response(200, ProductPageSchema)
    @products.doc(operationId="listProducts")
    def get(self, args: dict[str, Any]) -> Any:
        """List products, filtered and sorted, one page at a time"""
        return _page_response(catalog.list_products(**args, render=PRODUCT_PAGE))

    @require_api_key(products, Scope.OPERATOR)
    @products.etag
    @products.arguments(ProductSchema())
    @products.response(201, ProductSchema, headers={"Location": LOCATION})
    @products.alt_response(409, response="CONFLICT")
    @products.doc(operationId="createProduct")
    def post(self, data: dict[str, Any]) -> Any:
        """Create a product"""
        product = catalog.create_product(**data)
        location = url_for(".ProductById", product_id=product["id"])
        return written(products, product, location=location)


@products.route(f"/{ID.format('product_id')}")
class ProductById(MethodView):
    @products.etag
    @products.response(200, ProductSchema)
    @products.alt_response(404, response="NOT_FOUND")
    @products.doc(operationId="getProduct")
    def get(self, product_id: int) -> Any:
        """Get a product"""
        return respond(catalog.get_product(product_id=product_id, render=PRODUCT))

    @require_api_key(products, Scope.OPERATOR)
    @products.etag
    @products.arguments(ProductUpdateSchema())
    @products.response(200, ProductSchema)
    @products.alt_response(404, response="NOT_FOUND")
    @products.alt_response(409, response="CONFLICT")
    @products.doc(operationId="updateProduct")
    def patch(self, changes: dict[str, Any], product_id: int) -> Any:
        """Change a product"""
        check = products.precondition(f"Product {product_id}", version_of)
        product = catalog.update_product(product_id=product_id, precondition=check, **changes)
        return written(products, product)

    @require_api_key(products, Scope.OPERATOR)
    @products.etag
    @products.response(204)
    @products.alt_response(404, response="NOT_FOUND")
    @products.alt_response(409, response="CONFLICT")
    @products.doc(operationId="deleteProduct")
    def delete(self, product_id: int) -> None:
        """Delete a product that is on no order"""
        check = products.precondition(f"Product {product_id}", version_of)
        catalog.delete_product(product_id=product_id, precondition=check)
