"""Who moves an order, and the history row each status change writes (OrderStatusChange).

Written only by orders.services, inside the transaction that changes the status, so a
rolled-back change leaves no row and every committed change leaves exactly one.
"""

from __future__ import annotations

from dataclasses import dataclass

from clients.models import ApiClient
from core.request_id import current_request_id
from orders.models import ActorType, CancelReason, Order, OrderStatus, OrderStatusChange


@dataclass(frozen=True)
class StatusActor:
    """Who changed an order's status: a type, plus the id and name when there is someone."""

    type: ActorType
    id: str = ""
    label: str = ""

    @classmethod
    def for_client(cls, client: ApiClient) -> StatusActor:
        return cls(type=ActorType.API_CLIENT, id=str(client.pk), label=client.name)

    @classmethod
    def for_staff(cls, user) -> StatusActor:
        # Any authenticated Django user (the admin's request.user); typed loosely so the
        # orders app need not import the auth model.
        return cls(type=ActorType.STAFF, id=str(user.pk), label=user.get_username())


PAYMENT_PROVIDER = StatusActor(type=ActorType.PAYMENT_PROVIDER, label="payment provider")
SYSTEM = StatusActor(type=ActorType.SYSTEM, label="system")
UNKNOWN_STAFF = StatusActor(type=ActorType.STAFF, label="staff")


def cancel_actor_for_reason(*, reason: CancelReason, client: ApiClient | None) -> StatusActor:
    """The actor a cancel reason implies, for callers that do not name one (SPEC §2: the
    customer cancels through the API, staff in the admin, the provider's webhook reports a
    failure, the expiry task cancels overdue orders)."""
    if reason == CancelReason.CUSTOMER_REQUESTED and client is not None:
        return StatusActor.for_client(client)
    if reason == CancelReason.STAFF_CANCELLED:
        return UNKNOWN_STAFF
    if reason == CancelReason.PAYMENT_FAILED:
        return PAYMENT_PROVIDER
    return SYSTEM


# The short "why" of a change that has no cancel reason.
_WHY_BY_STATUS: dict[str, str] = {
    OrderStatus.PENDING_PAYMENT: "order placed",
    OrderStatus.PAID: "payment succeeded",
    OrderStatus.REFUNDED: "payment refunded",
}


def status_change_record(*, order: Order, old_status: str, actor: StatusActor) -> None:
    """Write the history row of the change that brought `order` (as stored) to its status."""
    status_change_row(order=order, old_status=old_status, actor=actor).save(force_insert=True)


def status_change_row(*, order: Order, old_status: str, actor: StatusActor) -> OrderStatusChange:
    """The history row of that change, unsaved (a unit of work inserts it with the order)."""
    return OrderStatusChange(
        order=order,
        old_status=old_status,
        new_status=order.status,
        event_version=order.event_version,
        reason=order.cancel_reason or _WHY_BY_STATUS.get(order.status, ""),
        actor_type=actor.type,
        actor_id=actor.id,
        actor_label=actor.label,
        correlation_id=current_request_id() or "",
        created_at=order.updated_at if old_status else order.created_at,
    )
