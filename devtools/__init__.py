"""Development tools: the local stand-in upstreams (`devtools.sandbox`) and `make demo`.

Not part of the shipped `dwh-helper` package, the Airflow image or the API image; tests,
benchmarks and `make demo` find it on the path from the repository root. Production code
(plugins/dwh_helper, api, dags) never imports it (tests/test_layering.py).
"""
