"""Helpers of the admin tests: staff users in the groups `ensure_staff_groups` sets up, a
logged-in test client, and an admin form read back the way a browser would submit it."""

from __future__ import annotations

from html.parser import HTMLParser

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client


def make_staff(username: str, *groups: str, superuser: bool = False):
    call_command("ensure_staff_groups", verbosity=0)
    user = get_user_model().objects.create_user(
        username=username, password="x", is_staff=True, is_superuser=superuser
    )
    for group in groups:
        user.groups.add(user.groups.model.objects.get(name=group))
    return user


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


class _FormFields(HTMLParser):
    """Collects what a browser would submit from one <form id=...>: inputs, textareas,
    selects (checkboxes only when checked; submit buttons are left out)."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.in_form = False
        self.data: dict[str, str] = {}
        self._textarea: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.in_form = a.get("id") == self.form_id
        if not self.in_form:
            return
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind == "submit":
                return
            if kind == "checkbox":
                if "checked" in a:
                    self.data[name] = a.get("value") or "on"
                return
            self.data[name] = a.get("value") or ""
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = ""
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in a:
            self.data[self._select] = a.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.in_form = False
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea] += (
                data.lstrip("\n") if not self.data[self._textarea] else data
            )


def admin_form(client: Client, url: str, *, form_id: str) -> dict[str, str]:
    """GET an admin form the way a browser does and return what it would post back."""
    response = client.get(url)
    assert response.status_code == 200
    parser = _FormFields(form_id)
    parser.feed(response.content.decode())
    assert parser.data, f"no form #{form_id} in {url}"
    return parser.data
