# One image for the bot and the model worker. TORCH_INDEX picks the torch build:
#   cpu (default, small)  or  cu124 / cu126 ... for an NVIDIA GPU worker.
FROM python:3.11-slim
ARG TORCH_INDEX=cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HOME=/cache/huggingface
WORKDIR /app
RUN pip install torch --index-url https://download.pytorch.org/whl/${TORCH_INDEX}
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY models ./models
COPY templates ./templates
RUN pip install -e .
VOLUME ["/app/data", "/cache/huggingface"]
CMD ["mlm-bot", "run"]
