"""The ground floor: small helpers every app may use, importing no app."""
