# The companion API (`api` and `dwh-migrate` in docker-compose.yaml; see docs/deploy.md).
#
#   docker build -f docker/api.Dockerfile -t dwh-helper-api .
#   docker run --env-file .env -p 8000:8000 dwh-helper-api
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app/plugins:/app

WORKDIR /app

# One lock for the whole project (it includes Airflow; the API never imports it).
COPY requirements.txt /app/requirements.txt
RUN pip install -r /app/requirements.txt

COPY plugins/ /app/plugins/
COPY api/ /app/api/

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin dwh
USER dwh

EXPOSE 8000
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
