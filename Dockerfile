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
# Everything runs as an unprivileged user: a model that escapes its sandbox is not root in the
# container. The code stays root-owned (read-only to it); it writes only its home (the Hub cache,
# a named volume in docker-compose.yml, takes this folder's owner) and /app/.supersede (local
# files such as the console notifier's messages).
RUN useradd --create-home --uid 10001 --user-group supersede \
    && mkdir -p /home/supersede/.cache/huggingface /app/.supersede \
    && chown -R supersede:supersede /home/supersede /app/.supersede
USER supersede
CMD ["supersede", "run"]
