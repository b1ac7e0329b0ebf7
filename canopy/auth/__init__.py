"""Credentials every layer may check: the signed tokens (the api issues them; any process with the secret validates)."""
