# GPU image for tfbench: any binary runs as `docker run --gpus all IMAGE tfbench.<binary> --flags`.
#   docker build -t tfbench .                          (EXTRAS: pip extras; default lite,ray)
#   docker run --gpus all -v $HOME/tensorflow_datasets:/data -v $PWD/runs:/runs \
#       -v $HOME/.cache/tfbench-docker:/cache tfbench \
#       tfbench.finetune --model=mobilenet_v2 --dataset=dtd --data_dir=/data --output_dir=/runs
# /cache keeps downloaded ImageNet weights (Keras, TF-Hub), converted EfficientNet-Lite weights
# and probe features across containers. With the `ray` extra the same image is a Ray worker:
#   docker run --gpus all --network=host --shm-size=8g -v ... tfbench \
#       ray.scripts.scripts start --address=HEAD:6379 --block
FROM tensorflow/tensorflow:2.21.0-gpu

ARG EXTRAS=lite,ray
WORKDIR /opt/tfbench
COPY setup.py README.md LICENSE ./
COPY tfbench ./tfbench
COPY flags ./flags
# wget: KubeRay's health probes run it in every Ray pod (docs/cluster/rayjob.yaml).
RUN apt-get update && apt-get install -y --no-install-recommends wget && rm -rf /var/lib/apt/lists/*
RUN python -m pip install --no-cache-dir ".[${EXTRAS}]"

ENV TFDS_DATA_DIR=/data \
    KERAS_HOME=/cache/keras \
    TFHUB_CACHE_DIR=/cache/tfhub \
    TFBENCH_CACHE=/cache/tfbench \
    MPLCONFIGDIR=/cache/matplotlib
VOLUME ["/data", "/runs", "/cache"]

ENTRYPOINT ["python", "-m"]
CMD ["tfbench.probe", "--helpshort"]
