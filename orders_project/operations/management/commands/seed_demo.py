"""`python manage.py seed_demo`: demo data for a local run (idempotent).

Creates a dozen products, a staff user and an API client, and prints the credentials.
Never in production: the superuser's password is printed in the README.
"""

from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from catalog.models import Product
from clients.models import ApiClient
from clients.services import api_client_create, api_client_rotate_key

DEMO_PRODUCTS = [
    ("MUG-001", "Enamel mug", "12.50", 40),
    ("TEE-001", "Cotton t-shirt", "19.90", 25),
    ("CAP-001", "Baseball cap", "15.00", 30),
    ("BAG-001", "Canvas tote bag", "9.99", 50),
    ("NBK-001", "Dot-grid notebook", "7.25", 100),
    ("PEN-001", "Fountain pen", "34.00", 12),
    ("STK-001", "Sticker pack", "3.50", 200),
    ("HOD-001", "Hooded sweatshirt", "44.00", 15),
    ("BTL-001", "Steel water bottle", "22.00", 35),
    ("SCK-001", "Wool socks", "11.00", 60),
    ("PST-001", "Art poster", "18.00", 20),
    ("KEY-001", "Keychain", "4.75", 0),
]

DEMO_STAFF_USERNAME = "staff"
DEMO_CLIENT_NAME = "demo"


class Command(BaseCommand):
    help = "Load demo products, a staff user and an API client; prints their credentials."

    def add_arguments(self, parser):
        parser.add_argument(
            "--staff-password",
            default="staff-demo-password",
            help="password of the demo staff user 'staff' (default: %(default)s)",
        )

    def handle(self, *args, staff_password: str, **options):
        if settings.IS_PRODUCTION:
            raise CommandError(
                "seed_demo does not run with ENVIRONMENT=production: it creates a superuser "
                "whose password is published. Create the first admin with "
                "`python manage.py createsuperuser` and API clients with "
                "`python manage.py create_api_client NAME`."
            )
        for sku, name, price, stock in DEMO_PRODUCTS:
            Product.objects.get_or_create(
                sku=sku, defaults={"name": name, "price": Decimal(price), "stock": stock}
            )
        call_command("ensure_staff_groups", verbosity=0)
        user_model = get_user_model()
        user, _ = user_model.objects.get_or_create(
            username=DEMO_STAFF_USERNAME, defaults={"is_staff": True, "is_superuser": True}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(staff_password)
        user.save()
        # A fresh key every run: the old one cannot be printed again (only its hash is kept).
        existing = ApiClient.objects.filter(name=DEMO_CLIENT_NAME).first()
        if existing is None:
            _, key = api_client_create(name=DEMO_CLIENT_NAME)
        else:
            key = api_client_rotate_key(client_id=existing.pk)
        self.stdout.write(f"Products:     {Product.objects.count()}")
        self.stdout.write(f"Staff login:  {DEMO_STAFF_USERNAME} / {staff_password}")
        self.stdout.write(f"API key:      {key}")
