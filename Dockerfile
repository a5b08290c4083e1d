# GPU image for tfbench: any binary runs as `docker run --gpus all IMAGE tfbench.<binary> --flags`.
#   docker build -t tfbench .
#   docker run --gpus all -v $HOME/tensorflow_datasets:/data -v $PWD/runs:/runs tfbench \
#       tfbench.finetune --model=mobilenet_v2 --dataset=dtd --data_dir=/data --output_dir=/runs
FROM tensorflow/tensorflow:2.21.0-gpu

WORKDIR /opt/tfbench
COPY setup.py README.md ./
COPY tfbench ./tfbench
COPY flags ./flags
# wget: KubeRay's health probes run it in every Ray pod (docs/cluster/rayjob.yaml); the ray extra
# lets the image serve as a Ray head or worker for --executor=ray.
RUN apt-get update && apt-get install -y --no-install-recommends wget && rm -rf /var/lib/apt/lists/*
RUN python -m pip install --no-cache-dir ".[lite,ray]"

ENV TFDS_DATA_DIR=/data \
    KERAS_HOME=/cache/keras \
    TFHUB_CACHE_DIR=/cache/tfhub \
    TFBENCH_CACHE=/cache/tfbench
VOLUME ["/data", "/runs", "/cache"]

ENTRYPOINT ["python", "-m"]
CMD ["tfbench.probe", "--helpshort"]
