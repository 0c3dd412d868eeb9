# The image of every Airflow service in docker-compose.yaml (see docs/deploy.md).
#
#   docker compose build            # or: docker build -t dwh-helper-airflow .
#
# Keep the tag in step with `apache-airflow==` in requirements.txt (tests/deploy checks it).
FROM apache/airflow:3.3.2

# The project's lock, with Airflow pinned to the image's own version so that no pin in
# the lock can move it. The image already carries the Celery, Redis and FAB providers
# the Compose stack uses.
COPY --chown=airflow:0 requirements.txt /tmp/dwh-helper/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /tmp/dwh-helper/requirements.txt

# Bake the DAGs and the library in, so the image runs without the Compose bind mounts
# (in Compose, ./dags and ./plugins are mounted over these for live edits).
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
