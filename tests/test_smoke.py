import pytest

from tests.conftest import bearer

pytestmark = pytest.mark.both_databases


def test_create_list_revoke_round_trip(client, admin):
    created = client.post(
        "/api/v1/org/api-keys",
        headers=bearer(admin.key),
        json={"name": "CI Pipeline", "scopes": ["read:billing"]},
    )
    assert created.status_code == 201
    listed = client.get("/api/v1/org/api-keys", headers=bearer(admin.key)).json
    assert [k["name"] for k in listed["data"]] == ["CI Pipeline", "admin"]
    assert (
        client.delete(
            f"/api/v1/org/api-keys/{created.json['id']}", headers=bearer(admin.key)
        ).status_code
        == 204
    )
    assert (
        client.get("/api/v1/org/api-keys", headers=bearer(created.json["key"])).status_code == 401
    )
