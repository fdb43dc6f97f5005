"""The example's pages: a three-step signup, the profile, a staff bulk SMS page, a dev inbox.

Every rule (cooldowns, attempts, expiry) is textflow-django's: these views only call the
forms, keep the flow's state in the session and turn refusals into words.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import wraps
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from textflow_django.exceptions import (
    InvalidToken,
    LimitsUnavailable,
    RateLimited,
    ResendTooSoon,
    SMSProviderError,
    SMSProviderUnavailable,
    TooManyAttempts,
    VerificationError,
)
from textflow_django.forms import SendCodeForm, VerifyCodeForm
from textflow_django.verification import phone_from_token

from .dev_inbox import dev_inbox_enabled
from .management.commands.demo_admin import DEMO_ADMIN
from .models import Profile
from .services import create_account

logger = logging.getLogger(__name__)

#: Session keys of the signup flow: the number a code went to, then the proof it was verified.
SESSION_PHONE = "demo_phone"
SESSION_TOKEN = "demo_token"  # noqa: S105 - a session key, not a secret


def site_context(request: HttpRequest) -> dict[str, Any]:
    """Template context for the navigation bar: ``dev_inbox`` is whether to link the inbox."""
    return {"dev_inbox": dev_inbox_enabled()}


def code_may_arrive(error: VerificationError | None) -> bool:
    """True when a send failed after it may have reached TextFlow (a timeout, a 5xx, a
    garbled answer). The service then kept the cooldown and recorded the code, so the code
    verifies if it arrives: the user belongs on the code step, not back on the number."""
    return error is not None and bool(error.extra.get("code_may_arrive"))


def refusal_text(error: VerificationError | None) -> str:
    """What a page says about a refusal, in place of the service's own message where the
    page can say it better (how long to wait, that nothing was used up); "" to show the
    service's message as it is.

    One statement, said once: the replacement repeats nothing of the message it replaces
    (no "Try again later." followed by "Try again in 30 s.").
    """
    if error is None or code_may_arrive(error):
        # A send that may have gone out: the service's message says what to do (wait for the
        # code, or ask again once the wait is over), and something WAS used up.
        return ""
    wait = error.retry_after
    if isinstance(error, ResendTooSoon) and wait:
        return f"A code was sent a moment ago. Wait {wait} s before asking for a new code."
    if isinstance(error, RateLimited) and wait:
        return f"Too many requests. Try again in {wait} s."
    if isinstance(error, TooManyAttempts):
        if wait:
            return (
                "Too many wrong codes: this code is locked. "
                f"You can ask for a new code in {wait} s."
            )
        return "Too many wrong codes: this code is locked. Ask for a new code."
    if isinstance(error, SMSProviderError | SMSProviderUnavailable):
        # Unreachable, slow, throttling, a 5xx or garbage (a send that may have gone out
        # was answered above): to the user, all one thing.
        return (
            "TextFlow, the SMS service, is not answering right now. Nothing was used up: "
            "try again in a moment."
        )
    if isinstance(error, LimitsUnavailable):
        return "The service is unavailable. Nothing was used up: try again in a moment."
    return ""


#: A page that may load nothing but the site's own files (and what its scripts make: data:
#: images, blob: workers). Inline scripts and styles are allowed: the API docs page has both.
SAME_SITE_ONLY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:"
)


def same_site_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """``view``, whose pages the browser lets fetch nothing from another site (a Content
    Security Policy). For the API docs: Redoc's bundle shows its maker's logo from a CDN,
    which the browser then skips, so the page works offline and tells no one it was read."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = SAME_SITE_ONLY
        return response

    return wrapped


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/home.html")


# -- the signup flow (steps 1 and 2 also serve a signed-in user changing their number) ------


def phone_step(request: HttpRequest) -> HttpResponse:
    """Step 1: the number. A code is texted to it."""
    form = SendCodeForm(request.POST or None)
    if request.method == "POST":
        sent = form.send(request)
        if sent is not None or code_may_arrive(form.error):
            # Sent, or perhaps sent: either way the session now holds the code's handle
            # (the service remembered it), and step 2 is where that code is entered.
            request.session[SESSION_PHONE] = form.cleaned_data["phone_number"]
            request.session.pop(SESSION_TOKEN, None)
            if sent is None:
                _say_code_may_arrive(request, form.error)
            return redirect("code")
    context = {"form": form, "error_alert": refusal_text(form.error)}
    return render(request, "accounts/phone.html", context)


def _say_code_may_arrive(request: HttpRequest, error: VerificationError | None) -> None:
    """Tell the user a send TextFlow did not confirm may still deliver its code."""
    assert error is not None
    messages.warning(request, str(error.message))


def code_step(request: HttpRequest) -> HttpResponse:
    """Step 2: the code. On success the token goes into the session for step 3."""
    phone = request.session.get(SESSION_PHONE)
    if not phone:
        return redirect("phone")
    if request.method == "POST":
        # The number comes from the session, never from the page: step 2 checks the number
        # step 1 sent a code to.
        form = VerifyCodeForm({"phone_number": phone, "code": request.POST.get("code", "")})
        verified = form.verify(request)
        if verified is not None:
            del request.session[SESSION_PHONE]
            if request.user.is_authenticated:
                # The phone_verified receiver has already put the number on the profile.
                messages.success(request, f"{verified.phone_number} is verified.")
                return redirect("profile")
            request.session[SESSION_TOKEN] = verified.token
            return redirect("signup")
    else:
        form = VerifyCodeForm(initial={"phone_number": phone})
    return render(
        request,
        "accounts/code.html",
        {"form": form, "phone": phone, "error_alert": refusal_text(form.error)},
    )


@require_POST
def resend_code(request: HttpRequest) -> HttpResponse:
    """Step 2's "send a new code": the service's cooldown decides, the page says how long."""
    phone = request.session.get(SESSION_PHONE)
    if not phone:
        return redirect("phone")
    form = SendCodeForm({"phone_number": phone})
    if form.send(request) is not None:
        messages.success(request, f"A new code is on its way to {phone}.")
    elif code_may_arrive(form.error):
        # The new code replaced the old one (as a confirmed send would have), and may arrive.
        _say_code_may_arrive(request, form.error)
    else:
        text = refusal_text(form.error) or " ".join(
            [*form.non_field_errors(), *form.errors.get("phone_number", [])]
        )
        messages.error(request, text)
    return redirect("code")


def _restart(request: HttpRequest) -> HttpResponse:
    request.session.pop(SESSION_TOKEN, None)
    messages.error(request, "Your verification has expired or was already used. Verify again.")
    return redirect("phone")


def signup_step(request: HttpRequest) -> HttpResponse:
    """Step 3: username and password; the account gets the number the token proves."""
    token = request.session.get(SESSION_TOKEN)
    if not token:
        messages.info(request, "Verify your phone number first.")
        return redirect("phone")
    try:
        # A look only: the token is spent by create_account, with the account.
        phone = phone_from_token(token, request=request)
    except InvalidToken:
        return _restart(request)
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = create_account(token=token, create_user=form.save, request=request)
        except InvalidToken:
            return _restart(request)
        request.session.pop(SESSION_TOKEN, None)
        login(request, user)
        messages.success(request, f"Welcome, {user.get_username()}!")
        return redirect("profile")
    return render(request, "accounts/signup.html", {"form": form, "phone": phone})


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    user_profile = Profile.objects.filter(user=request.user).first()
    return render(request, "accounts/profile.html", {"profile": user_profile})


# -- staff: bulk SMS to every verified user ------------------------------------------------


def staff_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Signed-out visitors go to the login page; signed-in non-staff get a 403 page of the
    site that says why and how to sign in as staff (log out, log in as the demo's admin)."""

    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_staff:
            staff_login = f"{reverse('login')}?next={reverse('bulk')}"
            # The demo's admin password only where the dev inbox is (DEBUG, the emulator):
            # a deployed copy of this page must not tell every user how to become admin.
            demo_admin = DEMO_ADMIN if dev_inbox_enabled() else None
            context = {"staff_login": staff_login, "demo_admin": demo_admin}
            return render(request, "accounts/staff_only.html", context, status=403)
        return view(request, *args, **kwargs)

    return wrapped


class BulkSMSForm(forms.Form):
    text = forms.CharField(
        label="Message",
        max_length=640,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Sent to every user whose number is verified.",
    )


def _bulk_module() -> Any:
    """``textflow_django.bulk``, imported when a staff page needs it."""
    from textflow_django import bulk

    return bulk


def _run_job(job_id: int) -> None:
    bulk = _bulk_module()
    try:
        bulk.run_job(job_id)
    except bulk.BulkJobStopped as err:
        # The job is saved as stopped with its last_error; the page shows it.
        logger.warning("Bulk job %s stopped: %s", job_id, err)
    finally:
        if settings.DEMO_BULK_IN_BACKGROUND:
            connections.close_all()  # this thread's own connections


@staff_required
def bulk_sms(request: HttpRequest) -> HttpResponse:
    from textflow_django.models import BulkSMSJob

    verified = Profile.objects.filter(phone_verified=True)
    form = BulkSMSForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        bulk = _bulk_module()
        job = bulk.create_job(
            text=form.cleaned_data["text"],
            # Read in pages by the bulk module, never all at once.
            source=bulk.model_numbers("accounts.Profile", "phone", ["phone_verified=True"]),
        )
        if settings.DEMO_BULK_IN_BACKGROUND:
            threading.Thread(target=_run_job, args=(job.pk,), daemon=True).start()
        else:
            _run_job(job.pk)
        return redirect("bulk-job", pk=job.pk)
    context = {
        "form": form,
        "recipients": verified.count(),
        "jobs": BulkSMSJob.objects.order_by("-created_at", "-id")[:10],
    }
    return render(request, "accounts/bulk.html", context)


@staff_required
def bulk_job(request: HttpRequest, pk: int) -> HttpResponse:
    from textflow_django.models import BulkSMSJob

    job = get_object_or_404(BulkSMSJob, pk=pk)
    done = job.finished_at is not None or job.status == BulkSMSJob.Status.STOPPED
    return render(
        request,
        "accounts/bulk_job.html",
        {"job": job, "done": done, "percent": round(job.progress * 100)},
    )
