#!/usr/bin/env bash
# 'nas search --strategy combo' through local Ray on every built-in space: 4 evaluations each (2 random,
# then 2 COMBO suggestions with a MAP fit), 1 training epoch, candidates over 300k parameters skipped.
#   bash benchmarks/combo_every_space.sh | tee results/combo_every_space.txt
set -u
export RAY_AUTH_MODE=disabled
out=$(mktemp -d)
for sp in vgg inception resnet densenet highway darts nb201 timeception video; do
  extra=""
  data="digits"
  case $sp in
    timeception|video) data="moving_digits:per_class=6,side=8";;
    nb201) extra="--space-option C=8 --space-option N=1";;
    darts) extra="--space-option C=4 --space-option layers=3";;
  esac
  start=$(date +%s)
  nas search --space $sp --strategy combo --budget 4 --epochs 1 --dataset "$data" --max-params 300000 \
     --strategy-option n_initial=2 --strategy-option fit=map --workers 1 --seed 0 $extra --out $out/$sp > $out/$sp.log 2>&1
  rc=$?
  echo "$sp rc=$rc $(( $(date +%s) - start )) s: $(grep -E '^[0-9]+ evaluations' $out/$sp.log)"
done
