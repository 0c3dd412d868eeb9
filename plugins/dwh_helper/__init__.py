"""DWH Helper: Amplitude and AppMetrica raw events into S3 and a PostgreSQL DWH."""
