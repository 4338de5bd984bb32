"""The approvals queue: tool calls waiting for a person, with approve and reject buttons.

The changelist opens on the pending calls (the queue); its filter shows the decided ones too.
Every decision goes through `approvals.services.approval_decide` (POST to the decide view),
from the queue, the run's page (templates/admin/approvals/run_panel.html) or the live page,
and needs the `approvals.decide_approval` permission (the operator role).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

from approvals import services
from approvals.models import Approval
from approvals.selectors import DECIDE_PERMISSION
from audit.services import Actor
from common.admin import ReadOnlyAdmin

ARGUMENTS_PREVIEW_CHARS = 120


class QueueFilter(admin.SimpleListFilter):
    """Status, pending by default: the changelist is the queue of calls waiting for a person."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [*Approval.Status.choices, ("all", "All")]

    def value(self) -> str:
        return super().value() or Approval.Status.PENDING

    def choices(self, changelist: Any) -> Any:
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Approval]) -> QuerySet[Approval]:
        value = self.value()
        return queryset if value == "all" else queryset.filter(status=value)


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin[Approval]):
    list_display = (
        "tool",
        "arguments_preview",
        "run_link",
        "owner",
        "status",
        "requested_at",
        "expires_at",
        "decided",
        "call_id",
    )
    list_filter = (QueueFilter, "tool")
    list_select_related = ("run", "run__owner")
    search_fields = ("=run__id", "=call_id", "tool")
    ordering = ("id",)
    actions = None
    readonly_fields = (
        "run_link",
        "call_id",
        "tool",
        "arguments_json",
        "status",
        "requested_at",
        "expires_at",
        "decided_at",
        "decided_by_label",
        "message",
    )
    fields = readonly_fields

    def get_list_display(self, request: HttpRequest) -> Any:
        shown = list(super().get_list_display(request))
        if request.user.has_perm(DECIDE_PERMISSION):  # the buttons right after what is asked
            shown.insert(shown.index("arguments_preview") + 1, "decide_buttons")
        return shown

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        pending = request.GET.get("status", Approval.Status.PENDING) == Approval.Status.PENDING
        title = "Pending approvals" if pending else "Approvals"
        return super().changelist_view(request, {"title": title, **(extra_context or {})})

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/decide/", view(self.decide_view), name="approvals_approval_decide"),
            *super().get_urls(),
        ]

    @admin.display(description="run")
    def run_link(self, obj: Approval) -> str:
        url = reverse("admin:runs_run_change", args=[quote(obj.run_id)])
        return format_html('<a href="{}">{}</a>', url, obj.run_id)

    @admin.display(description="owner", ordering="run__owner__username")
    def owner(self, obj: Approval) -> str:
        return obj.run.owner.get_username()

    @admin.display(description="arguments")
    def arguments_preview(self, obj: Approval) -> str:
        text = json.dumps(obj.arguments, ensure_ascii=False)
        text = text if len(text) <= ARGUMENTS_PREVIEW_CHARS else text[: ARGUMENTS_PREVIEW_CHARS - 1] + "…"
        return format_html('<code style="display:inline-block;min-width:18em;white-space:pre-wrap">{}</code>', text)

    @admin.display(description="arguments")
    def arguments_json(self, obj: Approval) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.arguments, ensure_ascii=False, indent=2))

    @admin.display(description="decided")
    def decided(self, obj: Approval) -> str:
        if obj.is_pending:
            return "—"
        return format_html(
            "{} · {}{}",
            obj.decided_by_label or "?",
            f"{obj.decided_at:%Y-%m-%d %H:%M}" if obj.decided_at else "",
            f" · {obj.message}" if obj.message else "",
        )

    @admin.display(description="decide")
    def decide_buttons(self, obj: Approval) -> str:
        """Buttons that submit the changelist's own form (its CSRF token) to the decide view."""
        if not obj.is_pending:
            return ""
        url = reverse("admin:approvals_approval_decide", args=[quote(obj.pk)])
        return format_html(
            '<input type="text" name="message_{id}" placeholder="message (a rejection\'s reaches the model)" '
            'class="approval-message" size="24"><br>'
            '<button type="submit" class="button approve-call" formaction="{url}" name="decision" value="approve" '
            'data-call="{call}">Approve</button> '
            '<button type="submit" class="button reject-call" formaction="{url}" name="decision" value="reject" '
            'data-call="{call}">Reject</button>',
            id=obj.pk,
            url=url,
            call=obj.call_id,
        )

    def decide_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST decision=approve|reject, message (or message_<approval id>), next: decide one call."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm(DECIDE_PERMISSION):
            raise PermissionDenied("approving or rejecting tool calls needs the approvals.decide_approval permission")
        approval = Approval.objects.filter(pk=unquote(object_id)).first()
        if approval is None:
            raise Http404("no such approval")
        decision = request.POST.get("decision", "")
        message = request.POST.get(f"message_{approval.pk}") or request.POST.get("message", "")
        try:
            _, run_status = services.approval_decide(
                run_id=approval.run_id,
                call_id=approval.call_id,
                decision=decision,
                message=message,
                actor=Actor.for_user(request.user),
                user=request.user,  # type: ignore[arg-type]
            )
        except services.ApprovalError as exc:
            self.message_user(request, f"Not decided: {exc}", messages.ERROR)
        else:
            done = "Approved" if decision == "approve" else "Rejected"
            then = (
                "the run is queued and will resume" if run_status == "queued" else "the run still waits on other calls"
            )
            self.message_user(
                request,
                f"{done} {approval.tool} ({approval.call_id}) of run {approval.run_id}: {then}.",
                messages.SUCCESS,
            )
        target = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            target = reverse("admin:approvals_approval_changelist")
        return HttpResponseRedirect(target)
