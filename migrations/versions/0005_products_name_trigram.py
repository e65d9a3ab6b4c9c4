"""products: a trigram GIN index on name for search (PostgreSQL only; SQLite keeps its scan)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 21:45:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    # pg_trgm ships with PostgreSQL (contrib) and is trusted since 13: the owner may create it.
    op.execute('CREATE EXTENSION IF NOT EXISTS pg_trgm')
    op.create_index(
        'ix_products_name_trgm',
        'products',
        ['name'],
        postgresql_using='gin',
        postgresql_ops={'name': 'gin_trgm_ops'},
    )


def downgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.drop_index('ix_products_name_trgm', table_name='products')
    # The extension stays: other objects may use it, and dropping it needs their absence.
