"""Privacy and security: API keys and scopes, residency, pseudonymous ids, the user's
rights (export, erasure), the hash-chained audit log, rate limits and the fraud guard."""
