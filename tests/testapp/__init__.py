"""A test-only app with a model using PhoneNumberField (exercises migrations and the DB)."""
