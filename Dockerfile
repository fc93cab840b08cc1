# LACE server image: small, non-root, running `lace serve` against LACE_DATABASE_URL.
#   docker build -t lace .
#   docker run -e LACE_DATABASE_URL=postgresql://lace:secret@db:5432/lace -p 50051:50051 lace
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lace_engine lace_engine
COPY lace_server lace_server
COPY migrations migrations
COPY clients/python clients/python
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app lace && mkdir -p /app && chown lace /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER lace
WORKDIR /app
ENV LACE_LOG_FORMAT=json \
    LACE_LISTEN=0.0.0.0:50051
EXPOSE 50051
# Health: grpc.health.v1 on the same port (e.g. grpc_health_probe -addr=:50051).
ENTRYPOINT ["lace"]
CMD ["serve"]
