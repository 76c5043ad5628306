#!/usr/bin/env bash
# rs on several machines without a scheduler: run this on every machine, with the same flags.
#
#   COORDINATOR=10.0.0.2:8476 NODES=4 NODE_RANK=0 bash launch/multinode.sh \
#       --config=configs/rs350_i256.py --workdir=gs://BUCKET/rs350     # on 10.0.0.2
#   COORDINATOR=10.0.0.2:8476 NODES=4 NODE_RANK=1 bash launch/multinode.sh ...  # and so on
#
# COORDINATOR is node 0's address and a port open between the machines; NODE_RANK is 0 .. NODES-1,
# a different one on each machine. rs passes them to jax.distributed (JAX_COORDINATOR_ADDRESS,
# JAX_NUM_PROCESSES, JAX_PROCESS_ID) and checks them. Each machine uses all its accelerators.
# The workdir must be one every machine sees (gs://, or a shared file system).
# PYTHON (default: python3) runs rs.
set -euo pipefail
for name in COORDINATOR NODES NODE_RANK; do
  if [ -z "${!name:-}" ]; then
    echo "launch/multinode.sh: error: $name not set: give COORDINATOR=host:port of node 0," \
      "NODES=<machines> and NODE_RANK=<0..NODES-1> on every machine" >&2
    exit 2
  fi
done
if [ $# -eq 0 ]; then
  echo "launch/multinode.sh: error: give rs.main's flags, e.g. --config=configs/rs350_i256.py" \
    "--workdir=gs://BUCKET/rs350" >&2
  exit 2
fi
export JAX_COORDINATOR_ADDRESS="$COORDINATOR" JAX_NUM_PROCESSES="$NODES" JAX_PROCESS_ID="$NODE_RANK"
exec "${PYTHON:-python3}" -m rs.main "$@"
