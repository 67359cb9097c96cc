# The order's `payment` is read from the payments app at read time (the reader payments
# registers with orders.selectors.register_payment_summary_reader), so the copy of the
# payment's status and provider id on the order row goes (issue 10 item 4).
#
# Deploy note: code that still writes or reads these columns must be gone before this
# runs; the columns had db_default "", so such code only inserting orders stays valid
# until then.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0006_orderstatuschange"),
    ]

    operations = [
        migrations.RemoveField(model_name="order", name="payment_status"),
        migrations.RemoveField(model_name="order", name="provider_payment_id"),
    ]
