"""URLs of the example project."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from accounts import api, dev_inbox, views
from accounts.views import same_site_only

urlpatterns = [
    path("", views.home, name="home"),
    # The signup flow: number, code, account. Steps 1-2 also change a signed-in user's number.
    path("phone/", views.phone_step, name="phone"),
    path("phone/code/", views.code_step, name="code"),
    path("phone/resend/", views.resend_code, name="resend"),
    path("signup/", views.signup_step, name="signup"),
    path("profile/", views.profile, name="profile"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("staff/bulk/", views.bulk_sms, name="bulk"),
    path("staff/bulk/<int:pk>/", views.bulk_job, name="bulk-job"),
    path("dev/inbox/", dev_inbox.dev_inbox, name="dev-inbox"),
    path("admin/", admin.site.urls),
    # The same flow over JSON: the app's endpoints, then the project's signup.
    path("api/phone/", include("textflow_django.urls")),
    path("api/signup/", api.SignupView.as_view(), name="api-signup"),
]

if settings.HAS_SPECTACULAR:
    from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView

    urlpatterns.append(path("api/schema/", SpectacularAPIView.as_view(), name="schema"))
    if settings.HAS_SPECTACULAR_SIDECAR:
        # Redoc's JavaScript is served from the sidecar package, and the page is the
        # example's own (drf-spectacular's links Google's web fonts): no CDN needed.
        docs = SpectacularRedocView.as_view(
            url_name="schema", template_name="accounts/api_docs.html"
        )
        urlpatterns.append(path("api/docs/", same_site_only(docs), name="api-docs"))
