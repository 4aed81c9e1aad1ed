# lscdistill on the official PyTorch CUDA runtime image: torch, torchvision, CUDA and cuDNN come from the base,
# pip adds the package and its other dependencies. Usage (docs/docker.md):
#   docker build -t lscdistill .
#   docker run --rm --gpus all --ipc=host -v "$PWD/data:/data" lscdistill train -m test_resnet --data digits --out run
FROM pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime

LABEL org.opencontainers.image.title="lscdistill" \
      org.opencontainers.image.description="Train networks toward fixed class centers instead of a classifier." \
      org.opencontainers.image.licenses="Apache-2.0"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# XDG_CACHE_HOME: where the Hugging Face hub, torch hub and accelerate keep caches and config (mount it to keep them).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    XDG_CACHE_HOME=/cache

COPY pyproject.toml README.md /tmp/lscdistill-src/
COPY lscdistill /tmp/lscdistill-src/lscdistill
COPY recipes /tmp/lscdistill-src/recipes

# Keep the base image's CUDA builds of torch and torchvision: they satisfy torch>=2.1 / torchvision>=0.16, and the
# constraints file turns any attempt by the resolver to replace them into a build error instead of a silent
# multi-GB download of another build (and a base without them fails at the grep). Non-editable install; the source
# copy is removed afterwards.
# A C compiler: the fast decoder's CPU kernel (lscdistill.systems.native) is built here once, into
# /cache/lscdistill (a mounted /cache builds its own copy on first use, in about a second). Not version-pinned:
# the Ubuntu archive drops superseded gcc builds, so a pin would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN pip list --format=freeze | grep -E '^(torch|torchvision)==' > /tmp/base-torch.txt \
    && pip install --no-cache-dir --constraint /tmp/base-torch.txt /tmp/lscdistill-src \
    && python -c "import torch, lscdistill; print('lscdistill', lscdistill.__version__, 'torch', torch.__version__)" \
    && python -c "from lscdistill.systems import native; assert native.available(), 'C kernel not built'" \
    && cat /tmp/base-torch.txt \
    && rm -rf /tmp/base-torch.txt /tmp/lscdistill-src

# Unprivileged user with UID 1000 (the usual first host user, so files written to a bind mount belong to them; a
# base image that already has UID 1000 keeps its user). /data (the working directory, meant for a bind mount)
# and /cache are writable by any UID, so `docker run --user "$(id -u):$(id -g)"` works for every host user.
RUN (id -u 1000 > /dev/null 2>&1 || useradd --create-home --uid 1000 --shell /usr/sbin/nologin lscdistill) \
    && mkdir -p /data /cache \
    && chmod 1777 /data /cache /cache/lscdistill
USER 1000
WORKDIR /data

ENTRYPOINT ["lscdistill"]
CMD ["--help"]
