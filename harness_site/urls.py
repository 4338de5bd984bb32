from django.contrib import admin
from django.urls import path

from harness_site.api import api
from harness_site.health import health

admin.site.site_header = "Agent harness"
admin.site.site_title = "Agent harness"
admin.site.index_title = "Operations"

urlpatterns = [
    path("health", health, name="health"),
    path("api/", api.urls),
    path("admin/", admin.site.urls),
]
