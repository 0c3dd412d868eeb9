"""DWH Helper's companion HTTP service: exports on demand, the DWH tables, S3 objects, the ETL."""
