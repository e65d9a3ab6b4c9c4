"""Locust load tests of glassbox: the shopper model, load shapes and pass/fail thresholds."""
