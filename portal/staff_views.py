"""The admin role's pages: staff accounts, invitations, roles, disabling, second-factor resets.

Every change goes through portal.services (which records it with before and after) and is refused there, with
a reason the admin reads, for their own account or for the last active admin.
"""

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import permission_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse_lazy
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import selectors, services
from .roles import ROLES

MANAGE_STAFF = "portal.manage_staff"
ROLE_CHOICES = [(role, role.capitalize()) for role in ROLES]


class InviteForm(forms.Form):
    username = forms.CharField(label="User name", max_length=150)
    email = forms.EmailField(label="Email", help_text="The invitation with a link to choose a password goes here.")
    role = forms.ChoiceField(label="Role", choices=ROLE_CHOICES, initial="viewer")


def _refusable(request, change) -> None:
    """Run a change; a refusal becomes a message on the staff page (the one place that catches it)."""
    try:
        change()
    except services.StaffChangeRefused as refusal:
        messages.error(request, str(refusal))
        return False
    return True


@require_GET
@permission_required(MANAGE_STAFF, raise_exception=True)
def staff_list(request):
    context = {"accounts": selectors.staff_accounts(), "roles": ROLE_CHOICES}
    return render(request, "portal/staff_list.html", context)


@require_http_methods(["GET", "POST"])
@permission_required(MANAGE_STAFF, raise_exception=True)
def staff_invite(request):
    form = InviteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data

        def invite():
            services.staff_invite(
                username=data["username"], email=data["email"], role=data["role"], actor=request.user, request=request
            )

        if _refusable(request, invite):
            messages.success(request, f"Invitation sent to {data['email']}.")
            return redirect("staff_list")
    return render(request, "portal/staff_invite.html", {"form": form}, status=400 if form.errors else 200)


def _account(user_id):
    return get_object_or_404(get_user_model(), pk=user_id)


@require_POST
@permission_required(MANAGE_STAFF, raise_exception=True)
def staff_role(request, user_id):
    user = _account(user_id)
    role = request.POST.get("role", "")
    if _refusable(
        request, lambda: services.staff_role_change(user=user, role=role, actor=request.user, request=request)
    ):
        messages.success(request, f"{user.get_username()} is now {role}; their open sessions have ended.")
    return redirect("staff_list")


@require_POST
@permission_required(MANAGE_STAFF, raise_exception=True)
def staff_active(request, user_id):
    user = _account(user_id)
    active = request.POST.get("active") == "1"

    def change():
        services.staff_active_set(user=user, active=active, actor=request.user, request=request)

    if _refusable(request, change):
        done = "enabled" if active else "disabled; their open sessions have ended"
        messages.success(request, f"{user.get_username()} is {done}.")
    return redirect("staff_list")


@require_POST
@permission_required(MANAGE_STAFF, raise_exception=True)
def staff_reset_second_factor(request, user_id):
    user = _account(user_id)

    def reset():
        if user.pk == request.user.pk:
            raise services.StaffChangeRefused("You cannot reset your own second factor; ask another admin.")
        services.second_factor_reset(user=user, actor=request.user, request=request, via="staff page")

    if _refusable(request, reset):
        messages.success(request, f"{user.get_username()} sets up a new second factor at their next login.")
    return redirect("staff_list")


class StaffSetPasswordView(auth_views.PasswordResetConfirmView):
    """The invitation link: choose a password once (Django's reset token: one use, expiring), then log in."""

    template_name = "registration/staff_set_password.html"
    success_url = reverse_lazy("login")

    def form_valid(self, form):
        response = super().form_valid(form)
        messages.success(self.request, "Your password is set. Log in with it now.")
        return response
