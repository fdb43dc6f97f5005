from django.contrib import admin

from .models import Profile, VerifiedNumber


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
