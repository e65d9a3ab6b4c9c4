"""Reports own no tables: they read orders, order items, products and categories."""
