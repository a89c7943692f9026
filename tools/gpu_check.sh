#!/usr/bin/env bash
# GPU measurements for issue 7 (reward-model throughput + end-to-end humanoid run), meant for
# the lent device machine: the missing Python packages travel as wheels in .whl/ and the EGL
# loader libraries as debs in .gl/ (both ignored via .git/info/exclude; see the device README).
#   run: bash tools/gpu_check.sh      (carry: .whl .gl)
# Writes its logs under $OUT (or ./gpu_check_out). Knobs: TOTAL_FRAMES (3000), BENCH (1: run the
# reward benchmarks), L14_DTYPES ("bfloat16"), TESTS (1: run the GPU-only tests first; pytest
# and its dependencies must be among the wheels: pip download -d .whl pytest).
set -u
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:/tmp/site
export MUJOCO_GL=egl PYOPENGL_PLATFORM=egl
v=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
[ -f "$v" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$v

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    nproc
    python3 - <<'EOF'
import time, torch
print("torch", torch.__version__, torch.cuda.get_device_name(0))
for m in ("tensordict", "torchrl", "open_clip", "gymnasium", "mujoco", "lightning", "jsonargparse"):
    try:
        mod = __import__(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "IMPORT FAILED:", repr(e))
try:
    import vlmrm.envs  # selects MUJOCO_GL
    import mujoco
    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='1'/></worldbody></mujoco>")
    r = mujoco.Renderer(model, 480, 480)
    data = mujoco.MjData(model)
    t = time.perf_counter()
    for _ in range(50):
        r.update_scene(data)
        r.render()
    print("EGL render ok, 480x480 trivial scene fps:", 50 / (time.perf_counter() - t))
except Exception as e:
    print("EGL render FAILED:", repr(e))
EOF
} 2>&1 | tee "$OUT/env.txt"

if [ "${TESTS:-1}" = 1 ]; then
# The tests that skip on a CPU-only machine ("needs a CUDA GPU"), plus the CPU-side device
# logic beside them; -rs lists any that still skipped, with the reason.
echo "=== GPU tests"
if python3 -c "import pytest" 2>/dev/null; then
    # -o addopts=: in this process, one test after another (pyproject's -n needs pytest-xdist).
    timeout 300 python3 -m pytest -o addopts= -q -rs -p no:cacheprovider tests/test_gpu_paths.py \
        2>&1 | tee "$OUT/gpu_tests.txt"
    echo "gpu tests rc=${PIPESTATUS[0]}" | tee -a "$OUT/gpu_tests.txt"
else
    echo "pytest is not installed here: add its wheels to .whl (pip download -d .whl pytest)" \
        | tee "$OUT/gpu_tests.txt"
fi
fi

if [ "${BENCH:-1}" = 1 ]; then
echo "=== bench ViT-B-32"
timeout 120 python3 tools/bench_reward.py --model ViT-B-32 --device cuda --frames 256 \
    --repeats 5 --dtypes bfloat16 float32 2>&1 | grep -v Warning | tee "$OUT/bench_b32.txt"
echo "=== bench ViT-L-14"
timeout 150 python3 tools/bench_reward.py --model ViT-L-14 --device cuda --frames 256 \
    --repeats 5 --dtypes ${L14_DTYPES:-bfloat16} 2>&1 | grep -v Warning | tee "$OUT/bench_l14.txt"
fi

cat > /tmp/csv.yaml <<'EOF'
trainer:
  logger:
    - class_path: lightning.pytorch.loggers.CSVLogger
      init_args: {save_dir: runs}
EOF
fit() {  # $1: tag, rest: extra overrides
    local tag=$1; shift
    echo "=== fit $tag $*"
    local start=$(date +%s)
    timeout 200 python3 -m vlmrm.cli fit --config configs/kneeling.yaml --config /tmp/csv.yaml \
        --trainer.default_root_dir /tmp/runs_$tag --trainer.enable_progress_bar false \
        --data.reward.init_args.model ViT-L-14 --data.reward.init_args.pretrained null \
        --data.total_frames ${TOTAL_FRAMES:-3000} --data.learning_starts 1000 --data.num_envs 8 \
        --data.frames_per_batch 800 --evaluation.video false "$@" >"$OUT/fit_$tag.log" 2>&1
    local rc=$?
    echo "fit $tag rc=$rc wall_s=$(( $(date +%s) - start ))" | tee -a "$OUT/fit_$tag.log"
    tail -25 "$OUT/fit_$tag.log"
    local csv=$(find /tmp/runs_$tag -name metrics.csv | head -1)
    if [ -n "$csv" ]; then
        cp "$csv" "$OUT/metrics_$tag.csv"
        python3 - "$csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
keys = ["step", "time/env_steps", "time/env_steps_per_s", "time/reward_frames_per_s", "time/updates_per_s"]
print(" | ".join(keys))
for r in rows:
    if r.get("time/env_steps_per_s"):
        print(" | ".join(r.get(k, "") for k in keys))
EOF
    fi
    return $rc
}
fit parallel || fit serial --data.parallel false
