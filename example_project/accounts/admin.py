from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from .models import Profile, VerifiedNumber

User = get_user_model()


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["user", "phone", "phone_verified"]
    list_filter = ["phone_verified"]
    search_fields = ["user__username", "phone"]
    # Verified is the phone_verified receiver's to set, not an editor's.
    readonly_fields = ["phone_verified"]


@admin.register(VerifiedNumber)
class VerifiedNumberAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["phone", "verified_at", "claimed_by"]
    readonly_fields = ["phone", "verified_at", "claimed_by"]


# Django's user list, with the columns that fit a 1280-pixel screen beside the admin's
# sidebars (names are on the change page).
admin.site.unregister(User)


@admin.register(User)
class DemoUserAdmin(UserAdmin):  # type: ignore[type-arg]
    list_display = ("username", "email", "is_staff")
