"""orders.cancel_requested_at: a cancel recorded before its void or refund is sent

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 22:50:00

"""
from alembic import op
import sqlalchemy as sa

import service.database


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('orders') as batch_op:
        batch_op.add_column(sa.Column('cancel_requested_at', service.database.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_orders_cancel_requested_at', ['cancel_requested_at'])


def downgrade():
    with op.batch_alter_table('orders') as batch_op:
        batch_op.drop_index('ix_orders_cancel_requested_at')
        batch_op.drop_column('cancel_requested_at')
