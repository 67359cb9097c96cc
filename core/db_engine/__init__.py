"""Django's PostgreSQL engine with cheap metrics (see base.py and core/db_metrics.py)."""
