#!/bin/bash
# One benchmark's images on every GPU of several nodes: torchrun on each node, its own rendezvous over TCP.
#
#   sbatch --nodes 4 examples/slurm-generate.sh geneval Sana_1600M_1024px.pth runs/geneval
#
# The output folder must be on a filesystem every node sees (images and per-rank manifests are written there).
# The images are byte for byte those of one process, whatever the number of nodes and GPUs: the work is split
# into chunks fixed by the benchmark and --batch-size, and each rank makes every WORLD_SIZE-th chunk still to do.
# A node that dies stops the job (torchrun stops its node's processes; the others stop at the next barrier after
# SANA_EVAL_DIST_TIMEOUT seconds, default 1800); resubmit the same job, with any number of nodes, to finish it.
#SBATCH --job-name=sana-eval-generate
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=04:00:00
set -euo pipefail

BENCHMARK=${1:?benchmark}
WEIGHTS=${2:?checkpoint}
OUT=${3:?output folder on a shared filesystem}
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)

# HF_HUB_OFFLINE: the Gemma-2 text encoder and DC-AE come from the shared Hugging Face cache, never the network.
srun --kill-on-bad-exit=1 env HF_HUB_OFFLINE=1 \
  torchrun --nnodes "$SLURM_JOB_NUM_NODES" --nproc-per-node "$GPUS_PER_NODE" \
  --rdzv-backend c10d --rdzv-endpoint "$HEAD:29500" --rdzv-id "$SLURM_JOB_ID" \
  -m sana_eval generate --benchmark "$BENCHMARK" --weights "$WEIGHTS" --out "$OUT" --batch-size 16
