"""api keys: scopes (customer, operator) replace the admin flag

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 21:40:00.000000

"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scopes", sa.String(length=200), server_default="customer", nullable=False)
        )
    # Admin keys kept everything they had. The development key (refused in production)
    # keeps every README example working. Every other key gets `customer` only: it could
    # write the catalog before, but nothing tells a shop's own tool from a customer's key,
    # and operator would also show it every customer's orders, which it never saw.
    op.execute(
        sa.text("UPDATE api_keys SET scopes = 'customer operator' WHERE is_admin OR is_development")
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("is_admin")


def downgrade():
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("is_admin", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.execute(
        sa.text(
            "UPDATE api_keys SET is_admin = true WHERE scopes LIKE '%operator%' AND NOT is_development"
        )
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("scopes")
