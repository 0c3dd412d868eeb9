"""Declarations of what each source sends: read by sources, dwh, transform, pipeline and the API."""
