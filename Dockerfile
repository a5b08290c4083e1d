# GPU image for tfbench: any binary runs as `docker run --gpus all IMAGE tfbench.<binary> --flags`.
#   docker build -t tfbench .
#   docker run --gpus all -v $HOME/tensorflow_datasets:/data -v $PWD/runs:/runs tfbench \
#       tfbench.finetune --model=mobilenet_v2 --dataset=dtd --data_dir=/data --output_dir=/runs
FROM tensorflow/tensorflow:2.21.0-gpu

WORKDIR /opt/tfbench
COPY setup.py README.md ./
COPY tfbench ./tfbench
COPY flags ./flags
RUN python -m pip install --no-cache-dir ".[lite]"

ENV TFDS_DATA_DIR=/data \
    KERAS_HOME=/cache/keras \
    TFHUB_CACHE_DIR=/cache/tfhub \
    TFBENCH_CACHE=/cache/tfbench
VOLUME ["/data", "/runs", "/cache"]

ENTRYPOINT ["python", "-m"]
CMD ["tfbench.probe", "--helpshort"]
