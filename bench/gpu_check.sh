#!/usr/bin/env bash
# What CI cannot run: the CUDA tests, the core tests under that machine's torch, the fault-matrix
# cells whose paths differ on CUDA (bench/cuda_faults.py), and the overhead benchmark on the
# GPU (and on that machine's CPU for comparison).
#   bash bench/gpu_check.sh            # on a machine with a CUDA device; logs to $OUT
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/rnndoctor-gpu-check}
mkdir -p "$OUT"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'cuDNN', torch.backends.cudnn.version())" | tee "$OUT/device.txt"
python3 -m pytest -q -p no:rnndoctor tests/test_cuda.py tests/test_watch.py tests/probes tests/rules 2>&1 | tail -40 | tee "$OUT/tests.txt"
python3 bench/cuda_faults.py 2>&1 | tee "$OUT/faults-cuda.txt"
python3 bench/overhead.py --device cuda --repeats 9 --steps 200 2>&1 | tee "$OUT/bench-cuda.txt"
python3 bench/overhead.py --device cpu --model S --repeats 9 --steps 200 --threads 2 2>&1 | tee "$OUT/bench-cpu.txt"
