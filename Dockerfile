# syntax=docker/dockerfile:1
#
# Targets:
#   serve (default): the scoring service. ONNX Runtime + BentoML, no torch, no CUDA.
#       docker build -t anomaly-serve .                                   (mount a model at run time)
#       docker build -t anomaly-serve --build-arg MODEL_DIR=runs/elpv/model .   (bake one in)
#       docker run -p 3000:3000 -v $PWD/runs/elpv/model:/models/default:ro anomaly-serve
#   train: the training pipeline (torch from PyPI; GPU-capable where the host has one).
#       docker build -t anomaly-train --target train .
#       docker run -v $PWD/runs:/app/runs anomaly-train --config pipelines/elpv.yaml
#   mlflow: a tracking server with PostgreSQL support, used by docker-compose.yml.

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# ---------------------------------------------------------------- training image
FROM ${PYTHON_IMAGE} AS train
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir uv==0.13.9 && useradd --create-home --uid 10001 anomaly
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --extra train --no-install-project
COPY anomaly ./anomaly
COPY serving ./serving
COPY pipelines ./pipelines
RUN uv sync --locked --no-dev --extra train && chown -R anomaly /app
USER anomaly
ENTRYPOINT ["anomaly", "pipeline", "run"]
CMD ["--config", "pipelines/elpv.yaml"]

# ---------------------------------------------------------------- tracking server (docker-compose)
FROM ${PYTHON_IMAGE} AS mlflow
RUN pip install --no-cache-dir "mlflow[auth]==3.17.2" psycopg2-binary==2.9.13 && useradd --create-home --uid 10001 mlflow \
    && mkdir /mlartifacts && chown mlflow /mlartifacts
USER mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]

# ---------------------------------------------------------------- serving image (default target)
FROM ${PYTHON_IMAGE} AS serve
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PORT=3000 ANOMALY_MODEL=/models/default \
    BENTOML_HOME=/tmp/bentoml VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir uv==0.13.9 && uv venv /opt/venv && useradd --create-home --uid 10001 anomaly
WORKDIR /app
# The exact serving requirement set from uv.lock (uv export --extra serve): hashes checked, no torch.
COPY requirements/serve.txt requirements/serve.txt
RUN uv pip install --require-hashes --no-cache -r requirements/serve.txt
COPY pyproject.toml README.md ./
COPY anomaly ./anomaly
COPY serving ./serving
RUN uv pip install --no-deps --no-cache .
# A model directory baked in at build time (default: an empty placeholder; mount one at /models/default instead).
ARG MODEL_DIR=deploy/model
COPY --chown=anomaly ${MODEL_DIR} /models/default
USER anomaly
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '3000'), timeout=4)"]
ENTRYPOINT ["anomaly", "serve", "--host", "0.0.0.0"]
