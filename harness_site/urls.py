from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from artifacts.views import artifact_blob
from harness_site.api import api
from harness_site.health import health, ready
from runs.views import run_events_sse, run_live_page

admin.site.site_header = "Agent harness"
admin.site.site_title = "Agent harness"
admin.site.index_title = "Operations"

urlpatterns = [
    # The operators' console is the admin; API clients start at /api/docs.
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False), name="home"),
    path("health", health, name="health"),
    path("health/ready", ready, name="health-ready"),
    # Streaming responses bypass django-ninja, so the SSE route comes before the API.
    path("api/runs/<str:run_id>/events", run_events_sse, name="run-events"),
    path("api/", api.urls),
    path("runs/<str:run_id>/", run_live_page, name="run-live"),
    path("artifacts/blob/<str:token>", artifact_blob, name="artifact-blob"),
    path("admin/", admin.site.urls),
]
