"""No admin URL answers 5xx to what a staff member (or a forged link) puts in it (issue 9
item 14).

A superuser walks every registered ModelAdmin: its changelist with a battery of nasty query
strings (NUL in values and keys, unknown lookups, wrong-typed values for each list_filter,
garbage ordering and page numbers, search terms with NUL, % and 10k characters,
`_changelist_filters`/`e=`/`_to_field` garbage), one object's change, history and delete
pages with the same, garbage object ids in paths, the operations page and the autocomplete
endpoint. Every answer must be below 500; NUL and other characters PostgreSQL text cannot
hold are refused up front with 400 (core/input_guard.py).
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote as admin_quote
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import models
from django.test import Client
from django.urls import reverse

from outbox.models import OutboxEvent
from payments.models import WebhookInboxEntry
from tests.factories import make_product
from tests.orders.helpers import new_api, post_order, unique_email

# Autocommit, as in production: one refused query must not poison the next request.
pytestmark = pytest.mark.django_db(transaction=True)

LONG = "x" * 10_000

# Query strings (already URL-encoded) that any changelist must survive.
COMMON_QUERIES = [
    "status__exact=%00",
    "q=%00",
    "q=abc%00def",
    "q=%25",
    "q=%25%25_%5C",
    f"q={LONG}",
    "q=%FF%FE",  # not UTF-8
    "q=%ED%A0%80",  # an encoded lone surrogate
    "q=" + quote('"unterminated'),
    "%00=1",
    "a%00b=1",
    "foo__bar=1",
    "id__regex=(",
    "pk__in=garbage",
    "id=not-a-uuid",
    "id__isnull=maybe",
    "o=garbage",
    "o=999",
    "o=-999",
    "o=1.x.-",
    "o=%00",
    "p=-1",
    "p=0",
    "p=abc",
    "p=999999999999999999999999",
    "p=%00",
    "e=1",
    "e=%00",
    "all=&p=2",
    "_changelist_filters=garbage",
    "_changelist_filters=" + quote("status__exact=\x00&p=-1"),
    "_popup=1&_to_field=garbage",
    "_popup=1&_to_field=%00",
    "_to_field=password",
    "_facets=%00",
    "_facets=True",
    "created_at__year=abc",
    "created_at__year=2024&created_at__month=13",
    "created_at__year=2024&created_at__month=2&created_at__day=31",
    "created_at__year=99999999999",
    "created_at__gte=not-a-date",
]


def _field_queries(model_admin: admin.ModelAdmin) -> list[str]:
    """Wrong-typed values for every list_filter (and the date hierarchy) of this admin."""
    queries: list[str] = []
    opts = model_admin.model._meta
    names = [f for f in model_admin.list_filter if isinstance(f, str)]
    if model_admin.date_hierarchy:
        names.append(model_admin.date_hierarchy)
    for name in names:
        field = opts.get_field(name)
        queries += [
            f"{name}=%00",
            f"{name}__exact=%00",
            f"{name}__exact=garbage",
            f"{name}__in=garbage,%00,",
            f"{name}__isnull=maybe",
            f"{name}__isnull=%00",
            f"{name}__gte=not-a-date",
            f"{name}__lt=9999-99-99",
            f"{name}__exact={LONG}",
            f"{name}__regex=(",
            f"{name}__iregex=[",
        ]
        if isinstance(field, models.ForeignKey):
            queries += [
                f"{name}__id__exact=not-a-uuid",
                f"{name}__id__exact=%00",
                f"{name}__pk__exact=1",
                f"{name}__id__exact=99999999999999999999",
            ]
    return queries


def _registry():
    return sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)


def _label(item) -> str:
    return item[0]._meta.label


@pytest.fixture
def staff(django_user_model) -> Client:
    user = get_user_model().objects.create_superuser(username="root", password="x")
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


@pytest.fixture
def one_of_each(settings):
    """At least one row for every registered model, made the way the service makes them."""
    settings.ORDER_RATE_LIMIT = "1000/60s"
    product = make_product(stock=10)
    _row, _key, http = new_api()
    response = post_order(
        http, {"email": unique_email(), "items": [{"product_id": str(product.pk), "quantity": 1}]}
    )
    assert response.status_code == 201, response.content
    order_id = json.loads(response.content)["id"]
    WebhookInboxEntry.objects.create(
        webhook_id="msg_admin_input",
        event_type="payment.succeeded",
        payload={"type": "payment.succeeded", "data": {"order_id": order_id}},
        order_id=order_id,
        status="waiting",
    )
    Group.objects.get_or_create(name="input-test-group")
    assert OutboxEvent.objects.exists()


def _get(client: Client, url: str, query: str = ""):
    return client.get(f"{url}?{query}" if query else url)


def _failures(client: Client, urls_and_queries) -> list[str]:
    failures = []
    for url, query in urls_and_queries:
        response = _get(client, url, query)
        if response.status_code >= 500:
            failures.append(f"{response.status_code} {url[:120]}?{query[:120]}")
        elif response.status_code in (301, 302) and response.get("Location"):
            # A redirect (e.g. to ?e=1) must land on a page that works too.
            followed = client.get(response["Location"])
            if followed.status_code >= 500:
                failures.append(f"{followed.status_code} {response['Location'][:240]}")
    return failures


def _changelist_urls(model, model_admin) -> list[tuple[str, str]]:
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return [(url, query) for query in COMMON_QUERIES + _field_queries(model_admin)]


def _object_urls(model, model_admin) -> list[tuple[str, str]]:
    """Change, history, delete (and password, simple_history version) pages of one row,
    and of ids that name no row, with garbage query strings; the add page with garbage
    initial values."""
    opts = model._meta
    base = f"admin:{opts.app_label}_{opts.model_name}"
    obj = model._default_manager.order_by("pk").first()
    # Models nobody has written to yet (e.g. audit tables) still get the garbage ids.
    ids = [admin_quote(str(obj.pk))] if obj is not None else []
    ids += ["not-a-uuid", "%00", "99999999999999999999", "-1", "%25", quote(LONG[:2000])]
    queries = [
        "",
        "_changelist_filters=" + quote("status__exact=\x00"),
        "_changelist_filters=%00",
        "_popup=1&_to_field=garbage",
        "p=-1",
        "p=abc",
        "p=999999999999999999999999",
        "%00=1",
    ]
    urls = []
    for object_id in ids:
        for view in ("change", "history", "delete"):
            path = reverse(f"{base}_{view}", args=["__ID__"]).replace("__ID__", object_id)
            urls += [(path, query) for query in queries]
        if model is get_user_model():
            path = reverse("admin:auth_user_password_change", args=["__ID__"])
            urls.append((path.replace("__ID__", object_id), ""))
        if hasattr(model_admin, "history_form_view"):
            for version in ("1", "garbage", "%00", "99999999999999999999"):
                path = reverse(f"{base}_simple_history", args=["__ID__", "__V__"])
                urls.append((path.replace("__ID__", object_id).replace("__V__", version), ""))
    add = reverse(f"{base}_add")
    urls += [(add, "_changelist_filters=%00&name=%00"), (add, "client=garbage&_popup=1")]
    return urls


@pytest.mark.parametrize("entry", _registry(), ids=_label)
def test_model_admin_pages_survive_nasty_input(staff, one_of_each, entry):
    # given a superuser and a registered ModelAdmin (with a row, where the app makes one)
    model, model_admin = entry

    # when its changelist is asked for with every query in the battery, and one row's
    # pages (and ids that name no row) with garbage query strings
    failures = _failures(
        staff, _changelist_urls(model, model_admin) + _object_urls(model, model_admin)
    )

    # then no answer is a 5xx (including the page a redirect points to)
    assert not failures, "\n".join(failures)


OTHER_ADMIN_PAGES = [
    ("/admin/operations/", "%00=1"),
    ("/admin/operations/", "window=%00&since=garbage&p=-1"),
    ("/admin/operations/", f"x={LONG}"),
    ("/admin/", "q=%00"),
    ("/admin/orders/", "%00"),
    ("/admin/not-an-app/", "o=1"),
    ("/admin/autocomplete/", "term=%00&app_label=orders&model_name=order&field_name=client"),
    ("/admin/autocomplete/", "term=x&app_label=%00&model_name=x&field_name=y"),
    ("/admin/autocomplete/", "term=x&app_label=orders&model_name=order&field_name=id"),
    ("/admin/autocomplete/", "term=%25&app_label=orders&model_name=order&field_name=client"),
    ("/admin/r/999999/not-an-id/", ""),
    ("/admin/r/99999999999999999999/1/", ""),
    ("/admin/r/not-an-int/%00/", ""),
    ("/admin/%00/", ""),
    ("/admin/login/", "next=%00"),
    ("/admin/logout/", "next=%00"),
    ("/admin/jsi18n/", "language=%00"),
    ("/admin/password_change/", "%00"),
]


def test_other_admin_pages_survive_nasty_input(staff, one_of_each):
    # given a superuser
    # when the admin pages outside the ModelAdmins (the operations page among them) get
    # garbage in their paths and query strings
    failures = _failures(staff, OTHER_ADMIN_PAGES)

    # then every answer is below 500
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "query",
    ["status__exact=%00", "q=%00", "%00=1", "q=%ED%A0%80"],
    ids=["nul-value", "nul-search", "nul-key", "encoded-surrogate"],
)
@pytest.mark.django_db  # no request here reaches the database: no need to flush it after
def test_unstorable_characters_are_a_400_html_page_in_the_admin(staff, query):
    # given the order changelist
    url = reverse("admin:orders_order_changelist")

    # when the query holds a character PostgreSQL text cannot store
    response = _get(staff, url, query)

    # then 400 (an HTML page: this is the staff site), or for what decodes to U+FFFD, a 200
    if "%00" in query:
        assert response.status_code == 400, response.content[:300]
        assert response["Content-Type"].startswith("text/html")
    else:
        assert response.status_code in (200, 400), response.content[:300]


@pytest.mark.parametrize(
    "path, code, field",
    [
        ("/api/v1/products/?search=%00", "validation_error", "search"),
        ("/api/v1/products/?search=ok&x=a%00b", "validation_error", "x"),
        ("/api/v1/products/?a%00b=1", "validation_error", "a\ufffdb"),
        ("/api/v1/orders/?status=%00", "validation_error", "status"),
        ("/healthz?x=%00", "validation_error", "x"),
        ("/api/v1/products/%00/", "bad_request", None),
    ],
)
@pytest.mark.django_db
def test_unstorable_characters_are_a_400_problem_in_the_api(path, code, field):
    # given any API path
    # when its query or path holds NUL
    response = Client().get(path)

    # then 400 problem+json: validation_error naming the query parameter, as the API's
    # own filter serializers do, or bad_request for a path
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    problem = json.loads(response.content)
    assert problem["code"] == code
    if field is not None:
        assert [error["field"] for error in problem["errors"]] == [field]
