# modelmon service image: `docker build -t modelmon .`
# The schema migrations are found relative to the package source (app/storage/migrate.py
# looks in ../../migrations), so the source tree stays in /app and the package is installed
# in editable mode on top of it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the service needs (no .venv, .git or tests in the image).
COPY pyproject.toml README.md LICENSE alembic.ini ./
COPY app ./app
COPY migrations ./migrations
RUN pip install -e . \
    && useradd --system --uid 10001 --home-dir /app --no-create-home modelmon

USER modelmon
ENV MODELMON_HOST=0.0.0.0 \
    MODELMON_PORT=8000
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

ENTRYPOINT ["modelmon"]
CMD ["serve", "--host", "0.0.0.0", "--no-migrate"]
