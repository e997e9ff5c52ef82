# tiktok-gateway: one small image, non-root, health-checked.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_METRICS_HOST=0.0.0.0

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY static ./static
RUN pip install . \
    && rm -rf /src \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/tiktok-gateway \
       --create-home --shell /usr/sbin/nologin gateway

WORKDIR /var/lib/tiktok-gateway
USER gateway
EXPOSE 8080 9464

HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

ENTRYPOINT ["tiktok-gateway"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
