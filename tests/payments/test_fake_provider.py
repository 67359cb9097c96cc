"""The fake provider keeps what it owes across a restart, like a real one: a webhook being
posted when the process dies is still in its state file, and is sent again after restart."""

from __future__ import annotations

import json
import socket
import threading

from payments.fake_provider import FakeProvider, ProviderConfig
from tests.payments.helpers import WEBHOOK_SECRET, eventually


def test_a_webhook_in_flight_is_kept_in_the_state_file(tmp_path):
    # given a receiver that accepts the connection and never answers
    receiver = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(receiver.accept()), daemon=True).start()
    state_file = tmp_path / "state.json"
    config = ProviderConfig(
        webhook_url=f"http://127.0.0.1:{receiver.getsockname()[1]}/hook",
        webhook_secret=WEBHOOK_SECRET,
        webhook_delay=0,
        state_file=state_file,
    )
    provider = FakeProvider(config)
    threading.Thread(target=provider.run_deliveries, daemon=True).start()
    try:
        # when a payment is created and its outcome webhook is being posted
        status, payment = provider.create_payment(
            "order-1",
            {"order_id": "o-1", "amount": "5.00", "currency": "USD", "email": "a@example.com"},
        )
        assert status == 201
        eventually(lambda: accepted, timeout=5, what="the webhook post under way")

        # then the state file (what a restart reads) still owes that webhook
        saved = json.loads(state_file.read_text())
        [owed] = saved["deliveries"]
        assert owed["payment_id"] == payment["id"]
        assert json.loads(owed["body"])["type"] == "payment.succeeded"

        # and a provider started from it sends it again, under the same webhook id
        restarted = FakeProvider(config)
        [(_, _, again)] = restarted.queue
        assert again["webhook_id"] == owed["webhook_id"]
        assert restarted.payments[payment["id"]]["status"] == "succeeded"
    finally:
        provider.stop()
        receiver.close()
        for connection, _ in accepted:
            connection.close()
