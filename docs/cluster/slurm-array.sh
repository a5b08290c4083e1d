#!/bin/bash
# The study as a Slurm job array: 32 array tasks with one GPU each, each running one shard of the
# plan (--shard=auto/32 reads SLURM_ARRAY_TASK_ID). Submit from the repository's root, a clone on
# storage every node sees:
#
#   sbatch docs/cluster/slurm-array.sh
#
# Compute nodes need no network if the weights and datasets are fetched first, once, where there
# is network (a login node), into the shared folders below (the models and datasets of
# flags/paper.flags; the same exports as below):
#
#   python -m tfbench.prepare --data_dir=$DATA_DIR --models=inception_v1,...,nasnet_large \
#       --datasets=food101,...,oxford_flowers102
#
# Time limits: a shard runs far longer than any partition allows. Ten minutes before the limit
# Slurm signals this script (--signal), which submits the same array index again as a new job and
# stops the sweep; the new job resumes it (finished tasks are skipped, a trial resumes from its
# last checkpoint, the old job's task locks are taken over). A new job rather than a requeue,
# since Slurm holds a job requeued more than MaxBatchRequeue times.
# Exit codes: 0, the shard is done. 3 (tfbench.cli.INCOMPLETE): the shard's own tasks are done
# but some conclusions wait for trials that other shards still run; submitted again to start
# after RETRY_DELAY seconds. 1: a task failed (its record says why); not resubmitted: fix the
# cause, then `sbatch --array=INDEX docs/cluster/slurm-array.sh`.
#SBATCH --job-name=tfbench-study
#SBATCH --array=0-31
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=48G
#SBATCH --time=2-00:00:00
#SBATCH --signal=B:USR1@600
#SBATCH --output=slurm-%A_%a.out
set -u

SHARDS=32  # the size of --array above
INCOMPLETE=3  # tfbench.cli.INCOMPLETE
RETRY_DELAY=${RETRY_DELAY:-3600}
DATA_DIR=${DATA_DIR:-/shared/tensorflow_datasets}
OUTPUT_DIR=${OUTPUT_DIR:-/shared/runs/paper}
CACHE=${CACHE:-/shared/tfbench-cache}
export KERAS_HOME=$CACHE/keras TFHUB_CACHE_DIR=$CACHE/tfhub TFBENCH_CACHE=$CACHE/tfbench

cd "$SLURM_SUBMIT_DIR" || exit 2
if [ ! -f flags/paper.flags ]; then
  echo "slurm-array: submit from the repository's root (no flags/paper.flags in $PWD)" >&2
  exit 2
fi

resubmit() {  # this array index again, as a new job starting at $1
  sbatch --array="$SLURM_ARRAY_TASK_ID" --begin="$1" docs/cluster/slurm-array.sh
}

on_time_limit() {
  echo "slurm-array: time limit near; shard $SLURM_ARRAY_TASK_ID submitted again, stopping" >&2
  resubmit now
  kill -TERM "$sweep" 2>/dev/null
  wait "$sweep"
  exit 0
}
trap on_time_limit USR1

python -m tfbench.sweep --flagfile=flags/paper.flags --shard=auto/$SHARDS --wait_for_needs=1800 \
  --output_dir="$OUTPUT_DIR" --data_dir="$DATA_DIR" &
sweep=$!
wait "$sweep"
status=$?

if [ "$status" -eq "$INCOMPLETE" ]; then
  echo "slurm-array: shard $SLURM_ARRAY_TASK_ID waits for other shards' trials; submitted again" \
       "to start in ${RETRY_DELAY}s" >&2
  resubmit "now+${RETRY_DELAY}"
  exit 0
fi
exit "$status"
