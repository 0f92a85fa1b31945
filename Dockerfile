# The service under granian (serve.py), SQLite in the /data volume by default; set
# DATABASE_URL=postgresql://... and REDIS_URL=redis://... to scale out, and
# WEB_CONCURRENCY to the container's CPUs (os.cpu_count() sees the host's).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DATABASE_URL=sqlite:////data/apikeys.db

WORKDIR /srv
COPY setup.cfg pyproject.toml README.md app.py serve.py ./
COPY apikeys apikeys
COPY schemas schemas
RUN pip install . \
    && useradd --system --no-create-home apikeys \
    && mkdir /data && chown apikeys /data

USER apikeys
VOLUME /data
EXPOSE 8000
# On the port serve.py listens on: PORT, as serve.py reads it.
HEALTHCHECK --interval=10s --timeout=2s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=2)"
CMD ["python", "serve.py"]
