"""Celery entry points of the orders app: load ids, call a service, nothing else."""

from celery import shared_task

from orders.idempotency import idempotency_purge_expired
from orders.rollups import order_hour_rollups_refresh
from orders.services import order_expire_overdue


@shared_task(acks_late=True)
def purge_expired_idempotency_records() -> int:
    return idempotency_purge_expired()


@shared_task(acks_late=True, ignore_result=True)
def expire_overdue_orders() -> int:
    return order_expire_overdue()


@shared_task(acks_late=True, ignore_result=True)
def refresh_order_hour_rollups() -> int:
    return order_hour_rollups_refresh()
