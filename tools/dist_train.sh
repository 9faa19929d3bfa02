#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG NPROC [extra args for tools/train.py]
# Backend (nccl on GPUs, gloo on CPU) comes from env_cfg.dist_cfg in the config.
set -euo pipefail
CONFIG=$1
NPROC=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
# The project's venv (made by `make venv`) when there is one.
VENV_PYTHON="$(dirname "$0")/../.venv/bin/python"
if [ -x "$VENV_PYTHON" ]; then DEFAULT_PYTHON=$VENV_PYTHON; else DEFAULT_PYTHON=python3; fi
PYTHON=${PYTHON:-$DEFAULT_PYTHON}
PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH:-} \
$PYTHON -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$NPROC" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "$@"
