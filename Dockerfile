# The image docker-compose.yml runs: the daemon and the workers share it.
FROM python:3.11-slim
ARG TORCH_SPEC=torch
WORKDIR /app
ENV PYTHONUNBUFFERED=1 HF_HUB_DISABLE_PROGRESS_BARS=1
COPY pyproject.toml README.md ./
COPY core ./core
COPY config ./config
COPY benchmarks ./benchmarks
COPY watcher ./watcher
COPY workers ./workers
COPY supersede ./supersede
RUN pip install --no-cache-dir "${TORCH_SPEC}" && pip install --no-cache-dir ".[postgres]"
CMD ["supersede", "run"]
