# mailproxy: the HTTP service on an embedded SQLite file in /data.
#   docker build -t mailproxy .
#   docker run -p 8000:8000 -e GMP_API_TOKEN=your-secret-token mailproxy
# GMP_API_TOKEN is the admin token: 8 characters at least (a shorter one stops the
# container at once with a line saying so; 16 or more advised, e.g. `openssl rand -hex
# 16`). Left unset, a token is generated at the first start, printed once in the log
# (docker logs) and kept in /data/admin_token.
# The data lives in the /data volume; keep it across containers with a named volume:
#   docker run -p 8000:8000 -v mailproxy-data:/data -e GMP_API_TOKEN=your-secret-token mailproxy
# A host folder mounted there instead must be writable by the image's user, uid 10001
# (the start stops with a line naming the folder otherwise):
#   mkdir -p data && sudo chown 10001 data
#   docker run -p 8000:8000 -v ./data:/data mailproxy
# Several containers on one PostgreSQL database instead (see docs/guides/scaling-out.md):
#   docker run -p 8000:8000 -e GMP_DB_PATH=postgresql://user@db/mailproxy \
#     -e GMP_DELIVERY_WORKER_ID=node-1 -e GMP_API_TOKEN=your-secret-token mailproxy
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GMP_DB_PATH=/data/mail_service.db \
    GMP_HOST=0.0.0.0 \
    GMP_PORT=8000

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /data mailproxy \
    && mkdir -p /data \
    && chown mailproxy /data

USER mailproxy
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GMP_PORT', '8000') + '/health', timeout=4)"]

# Without GMP_API_TOKEN a token is generated at the first start, printed in the log and
# kept in /data/admin_token; on later starts the log says where it is kept.
CMD ["mail-proxy", "serve"]
