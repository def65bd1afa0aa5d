#!/bin/sh
# A training script baked into the image: reads its params, writes its artifacts.
set -e
epochs=$(sed -n 's/.*"epochs": *\([0-9]*\).*/\1/p' /content/params.json)
for e in $(seq 1 "$epochs"); do echo "epoch $e/$epochs"; done
echo "trained for $epochs epochs by the image built from this directory" > /content/artifacts/result.txt
