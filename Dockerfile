# tiktok-gateway: one small image, non-root, health-checked.
#
# Two stages: the first installs the package into a virtual environment and strips the
# debug symbols from its extension modules (uvloop's alone were 11 MB); the second copies
# that environment onto a clean base, so pip, build tools, binutils and every cache stay
# behind. Bytecode is compiled at build time: with a read-only root filesystem the gateway
# could not write it, and would compile every module at each start.

FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The dependencies exactly as locked (versions and hashes: requirements.lock), in a layer of
# their own; then the package alone, and `pip check` fails the build if the lock missed one.
COPY requirements.lock ./
RUN python -m venv --without-pip /opt/tiktok-gateway \
    && pip --python /opt/tiktok-gateway/bin/python install --no-compile --require-hashes \
       -r requirements.lock
COPY pyproject.toml README.md LICENSE ./
COPY gateway ./gateway
COPY static ./static
RUN pip --python /opt/tiktok-gateway/bin/python install --no-compile --no-deps . \
    && pip --python /opt/tiktok-gateway/bin/python check \
    && find /opt/tiktok-gateway -name '*.so' -exec strip --strip-unneeded {} + \
    && /opt/tiktok-gateway/bin/python -m compileall -q -j 0 /opt/tiktok-gateway/lib

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/tiktok-gateway/bin:$PATH \
    GATEWAY_METRICS_HOST=0.0.0.0
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/tiktok-gateway \
       --create-home --shell /usr/sbin/nologin gateway
COPY --from=build /opt/tiktok-gateway /opt/tiktok-gateway

WORKDIR /var/lib/tiktok-gateway
USER 10001:10001
EXPOSE 8080 9464

HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

ENTRYPOINT ["tiktok-gateway"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
