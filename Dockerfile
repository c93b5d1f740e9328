# One image for the bot and the model worker (`mlm-bot run` / `mlm-bot worker`).
#
#   docker build -t mlm-bot .                                  CPU torch (the default: a much smaller image)
#   docker build -t mlm-bot:cuda \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .    CUDA torch, for a GPU worker
#
# The GPU image needs the NVIDIA driver and the NVIDIA Container Toolkit on the host (docs/deploy.md).
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Optional dependency groups of pyproject.toml to include: postgres (the default), ray (for `mlm-bot serve`),
# onnx (for MODEL_RUNTIME=onnxruntime; its exports are kept in the model cache volume).
ARG EXTRAS=postgres
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/cache/huggingface \
    MODEL_ONNX_CACHE=/cache/huggingface/mlm-bot-onnx \
    ON_CONFIG_ERROR=wait

# 1. torch alone, from the index that matches the hardware: the biggest layer, and the one that changes least.
RUN pip install "torch>=2.6" --index-url "${TORCH_INDEX}"

# 2. The other dependencies, read from pyproject.toml (with the EXTRAS groups): rebuilt only when the
#    dependencies change, not when the code does.
WORKDIR /app
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [e for e in '${EXTRAS}'.split(',') if e]; \
print('\n'.join(p['dependencies'] + sum((p['optional-dependencies'][e] for e in extras), [])))" \
    > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# 3. The project itself: a regular install into site-packages (no editable link to /src).
COPY README.md /src/
COPY pyproject.toml /src/
COPY bot /src/bot
COPY models /src/models
COPY templates /src/templates
RUN pip install --no-deps /src && rm -rf /src

# The processes run as an unprivileged user: the owner of the host's ./data, or "mlm" where Docker created that
# folder (as root). The entrypoint starts as root only to pick that user and hand it the cache, then drops to it.
COPY docker/entrypoint.sh /usr/local/bin/mlm-bot-entrypoint
# (The user is written to /etc/passwd directly: useradd is not in every slim base image.)
RUN echo "mlm:x:10001:10001:MLM Bot:/app:/usr/sbin/nologin" >> /etc/passwd \
 && echo "mlm:x:10001:" >> /etc/group \
 && mkdir -p /app/data /cache/huggingface \
 && chown mlm:mlm /app/data /cache/huggingface \
 && chmod 0755 /usr/local/bin/mlm-bot-entrypoint
VOLUME ["/app/data", "/cache/huggingface"]

# 8000: the model worker's HTTP API. 9090: the bot's /healthz and /metrics. 8443: the bot's webhook.
EXPOSE 8000 9090 8443
ENTRYPOINT ["mlm-bot-entrypoint"]
CMD ["mlm-bot", "run"]
