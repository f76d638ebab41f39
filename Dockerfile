# modelmon service image: `docker build -t modelmon .`
# The package is installed like any other (migrations/ ships inside it as app.migrations),
# with the exact dependency versions of requirements.lock; no source tree is kept in the image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package needs (no .venv, .git or tests in the build).
WORKDIR /src
COPY requirements.lock pyproject.toml setup.py README.md LICENSE ./
RUN pip install -r requirements.lock
COPY app ./app
COPY migrations ./migrations
RUN pip install --no-deps . \
    && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /var/lib/modelmon --create-home modelmon

# The working directory holds the embedded SQLite default when no database URL is set.
WORKDIR /var/lib/modelmon
USER modelmon
ENV MODELMON_HOST=0.0.0.0 \
    MODELMON_PORT=8000
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

ENTRYPOINT ["modelmon"]
CMD ["serve", "--host", "0.0.0.0", "--no-migrate"]
