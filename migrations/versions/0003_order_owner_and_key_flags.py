"""orders: owner API key, payment key, payment_failed status; api keys: admin and development flags

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 20:04:53.141680

"""
from alembic import op
import sqlalchemy as sa
import service.database  # noqa: F401 - glassbox column types (MoneyColumn, UTCDateTime)


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

OLD_STATUSES = "status IN ('pending', 'paid', 'cancelled')"
NEW_STATUSES = "status IN ('pending', 'paid', 'payment_failed', 'cancelled')"


def upgrade():
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_admin', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('is_development', sa.Boolean(), server_default=sa.false(), nullable=False))
    # The key `api-keys ensure-dev` made before this revision: production refuses it from now on.
    op.execute(sa.text("UPDATE api_keys SET is_development = true WHERE name = 'dev'"))

    with op.batch_alter_table('orders', schema=None) as batch_op:
        # Orders placed before this revision have no owner: only operator keys see them.
        batch_op.add_column(sa.Column('api_key_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('payment_key', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_orders_api_key_id_id', ['api_key_id', 'id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_orders_api_key_id_api_keys'), 'api_keys', ['api_key_id'], ['id'], ondelete='SET NULL')
        batch_op.drop_constraint(op.f('ck_orders_status_known'), type_='check')
        batch_op.create_check_constraint('status_known', NEW_STATUSES)


def downgrade():
    op.execute(sa.text("UPDATE orders SET status = 'cancelled' WHERE status = 'payment_failed'"))
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_orders_status_known'), type_='check')
        batch_op.create_check_constraint('status_known', OLD_STATUSES)
        batch_op.drop_constraint(batch_op.f('fk_orders_api_key_id_api_keys'), type_='foreignkey')
        batch_op.drop_index('ix_orders_api_key_id_id')
        batch_op.drop_column('payment_key')
        batch_op.drop_column('api_key_id')

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('is_development')
        batch_op.drop_column('is_admin')
