"""The accounts admin's actions: revoking cascades, and a tampered selection is refused by name."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from realtime_site.accounts.keys import create_api_key
from realtime_site.accounts.models import ApiKey, IssuedToken
from realtime_site.accounts.tokens import issue_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", password="pw-root-1234567"))
    return client


def test_admin_revoke_of_a_key_revokes_its_tokens(staff_client) -> None:
    user = get_user_model().objects.create_user("ada")
    key, _ = create_api_key(user)
    issue_token(user, ["echo"], 60, api_key=key)
    response = staff_client.post(
        "/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [str(key.pk)]}, follow=True
    )
    assert "Revoked 1 key(s) and the tokens they issued" in response.content.decode()
    assert ApiKey.objects.get().revoked_at is not None and IssuedToken.objects.get().revoked_at is not None


@pytest.mark.parametrize("action", ["revoke", "delete_selected"])
def test_admin_action_on_ids_that_are_not_ids_is_refused_by_name(staff_client, action: str) -> None:
    key, _ = create_api_key(get_user_model().objects.create_user("bea"))
    form = {"action": action, "_selected_action": [str(key.pk), "abc", "1 OR 1=1"]}
    response = staff_client.post("/admin/accounts/apikey/", form)
    assert response.status_code == 302
    page = staff_client.get(response["Location"]).content.decode()
    assert "Not API key ids: &#x27;abc&#x27;, &#x27;1 OR 1=1&#x27;; nothing was done." in page
    assert ApiKey.objects.get().revoked_at is None  # not even the good id: nothing half-done
