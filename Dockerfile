# GPU image for tfbench: any binary runs as `docker run --gpus all IMAGE tfbench.<binary> --flags`.
# Its Python packages are the exact pins of requirements_lock.txt (hash-checked), and it runs as
# a non-root user whose ids are build arguments (default 1000:1000, the runAsUser of
# docs/cluster/): build with yours so that records on a mounted folder are yours.
#   docker build -t tfbench --build-arg UID=$(id -u) --build-arg GID=$(id -g) .
#   docker run --gpus all -v $HOME/tensorflow_datasets:/data -v $PWD/runs:/runs \
#       -v $HOME/.cache/tfbench-docker:/cache tfbench \
#       tfbench.finetune --model=mobilenet_v2 --dataset=dtd --data_dir=/data --output_dir=/runs
# /cache keeps downloaded ImageNet weights (Keras, TF-Hub), converted EfficientNet-Lite weights
# and probe features across containers (`tfbench.prepare --models=...` fills it ahead of runs
# without network). The same image is a Ray node:
#   docker run --gpus all --network=host --shm-size=8g -v ... tfbench \
#       ray.scripts.scripts start --address=HEAD:6379 --block
FROM tensorflow/tensorflow:2.21.0-gpu

ARG UID=1000
ARG GID=1000
WORKDIR /opt/tfbench
# wget: KubeRay's health probes run it in every Ray pod (docs/cluster/rayjob.yaml).
RUN apt-get update && apt-get install -y --no-install-recommends wget && rm -rf /var/lib/apt/lists/*
# The lock pins wheels for one Python version (its header's --python-version): stop here, with
# the reason, on a base image with another.
COPY requirements_lock.txt ./
RUN python -c "import re, sys; want = re.search(r'--python-version (\S+)', open('requirements_lock.txt').read()).group(1); have = '%d.%d' % sys.version_info[:2]; sys.exit(None if have == want else f'requirements_lock.txt is for Python {want}; the base image has {have}')"
RUN python -m pip install --no-cache-dir --require-hashes -r requirements_lock.txt
COPY setup.py README.md LICENSE ./
COPY tfbench ./tfbench
COPY flags ./flags
RUN python -m pip install --no-cache-dir --no-deps .

# The user every container runs as; the folders it writes (volumes, and runs/ under the working
# directory for relative --output_dir) are its own.
RUN groupadd --non-unique --gid "${GID}" tfbench \
    && useradd --non-unique --uid "${UID}" --gid "${GID}" --create-home tfbench \
    && mkdir -p /data /runs /cache \
    && chown "${UID}:${GID}" /data /runs /cache /opt/tfbench
ENV TFDS_DATA_DIR=/data \
    KERAS_HOME=/cache/keras \
    TFHUB_CACHE_DIR=/cache/tfhub \
    TFBENCH_CACHE=/cache/tfbench \
    MPLCONFIGDIR=/cache/matplotlib
VOLUME ["/data", "/runs", "/cache"]
USER ${UID}:${GID}

ENTRYPOINT ["python", "-m"]
CMD ["tfbench.probe", "--helpshort"]
