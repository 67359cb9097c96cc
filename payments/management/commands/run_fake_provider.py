"""`python manage.py run_fake_provider`: the fake payment provider as its own process."""

import os
import signal
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from payments.fake_provider import Chaos, ProviderConfig
from payments.fake_provider_http import serve


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


class Command(BaseCommand):
    help = "Run the fake payment provider (HTTP API + signed webhooks with retries)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--host",
            default=os.environ.get("FAKE_PROVIDER_HOST", "127.0.0.1"),
            help="address to listen on (default: %(default)s; FAKE_PROVIDER_HOST sets it)",
        )
        parser.add_argument(
            "--port",
            type=int,
            default=int(os.environ.get("FAKE_PROVIDER_PORT", "8100")),
            help="port to listen on (default: %(default)s; FAKE_PROVIDER_PORT sets it)",
        )
        parser.add_argument(
            "--webhook-url",
            default=settings.PAYMENT_WEBHOOK_URL,
            help="where payment webhooks are sent "
            "(default: %(default)s; PAYMENT_WEBHOOK_URL sets it)",
        )
        parser.add_argument(
            "--webhook-secret",
            default=os.environ.get("FAKE_PROVIDER_WEBHOOK_SECRET")
            or settings.PAYMENT_WEBHOOK_SECRETS[0],
            help="whsec_... secret used to sign webhooks (default: the first of "
            "PAYMENT_WEBHOOK_SECRETS)",
        )
        parser.add_argument(
            "--webhook-delay",
            type=float,
            default=_env_float("FAKE_PROVIDER_WEBHOOK_DELAY", 1.0),
            help="seconds between a payment's creation and its webhook "
            "(default: %(default)s; FAKE_PROVIDER_WEBHOOK_DELAY sets it)",
        )
        parser.add_argument(
            "--state-file",
            default=os.environ.get("FAKE_PROVIDER_STATE_FILE"),
            help="JSON file the payments are kept in across restarts (default: "
            "FAKE_PROVIDER_STATE_FILE; without one they live in memory only)",
        )
        parser.add_argument(
            "--token",
            default=os.environ.get("FAKE_PROVIDER_TOKEN", ""),
            help="bearer token for GET /v1/payments... and POST /_chaos (default: "
            "FAKE_PROVIDER_TOKEN); without one those endpoints answer 403",
        )
        parser.add_argument(
            "--error-rate",
            type=float,
            default=_env_float("FAKE_PROVIDER_ERROR_RATE", 0),
            help="chaos: probability (0-1) that creating a payment answers 503 "
            "(default: %(default)s; FAKE_PROVIDER_ERROR_RATE sets it)",
        )
        parser.add_argument(
            "--latency",
            type=float,
            default=_env_float("FAKE_PROVIDER_LATENCY", 0),
            help="chaos: seconds added to every answer "
            "(default: %(default)s; FAKE_PROVIDER_LATENCY sets it)",
        )
        parser.add_argument(
            "--duplicate-rate",
            type=float,
            default=_env_float("FAKE_PROVIDER_DUPLICATE_RATE", 0),
            help="chaos: probability (0-1) that a webhook is delivered twice "
            "(default: %(default)s; FAKE_PROVIDER_DUPLICATE_RATE sets it)",
        )
        parser.add_argument(
            "--out-of-order",
            type=float,
            default=_env_float("FAKE_PROVIDER_OUT_OF_ORDER", 0),
            help="chaos: up to this many extra seconds of random webhook delay, so webhooks "
            "arrive out of order (default: %(default)s; FAKE_PROVIDER_OUT_OF_ORDER sets it)",
        )

    def handle(self, *args, **options):
        # SIGTERM ends the server loop the same way Ctrl-C does.
        signal.signal(signal.SIGTERM, _raise_interrupt)
        config = ProviderConfig(
            webhook_url=options["webhook_url"],
            webhook_secret=options["webhook_secret"],
            webhook_delay=options["webhook_delay"],
            state_file=Path(options["state_file"]) if options["state_file"] else None,
            token=options["token"] or None,
            chaos=Chaos(
                error_rate=options["error_rate"],
                latency=options["latency"],
                duplicate_rate=options["duplicate_rate"],
                out_of_order=options["out_of_order"],
            ),
        )
        self.stdout.write(
            f"fake payment provider on http://{options['host']}:{options['port']} "
            f"(webhooks to {config.webhook_url}; reads and /_chaos "
            f"{'need the bearer token' if config.token else 'disabled: no token'})"
        )
        try:
            serve(options["host"], options["port"], config)
        except KeyboardInterrupt:
            self.stdout.write("fake payment provider stopped")
