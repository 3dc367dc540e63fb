#!/bin/sh
# Made with the main checkout at commit af75b74 (before issue 20 item 4 put the built-in bnn on
# bayesdl.bnn.bayesian), OMP_NUM_THREADS=1, from this folder: sh make.sh
set -e
export OMP_NUM_THREADS=1
COMMON="--hidden 16 --steps 40 --log-every 20 --checkpoint-every 40 --kl-warmup 10 --samples 10 --seed 3 --quiet"
fit() { name=$1; shift; python -m bayesdl fit bnn "$@" $COMMON --out "$name"; rm -f "$name"/*.png "$name"/.lock; }
fit meanfield --guide meanfield
fit meanfield_sampled --guide meanfield --no-local-reparam
fit dropout --guide dropout
fit sparse_vd --guide sparse-vd
fit map --guide map
fit mle --guide mle
python expected.py
