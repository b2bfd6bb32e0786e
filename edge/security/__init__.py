"""Certificates and trust lists, users and their password checks."""
