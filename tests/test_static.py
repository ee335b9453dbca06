"""The console's stylesheets are served by the gateway itself, with DEBUG off as in serve."""

from django.test import Client


def test_admin_css_is_served_without_debug(settings):
    assert settings.DEBUG is False
    response = Client().get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/css")
