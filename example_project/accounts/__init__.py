"""The example's own app: profiles with a verified phone number, signup, staff bulk SMS."""
