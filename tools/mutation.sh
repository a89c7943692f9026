#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut 3 (not a project dependency):
#   pip install mutmut==3.8.1
#   bash tools/mutation.sh MODULE [SNAPSHOT_DIR]     MODULE: sac | rewards | data | envs
# Copies the working tree's src/, tests/ and configs/ to SNAPSHOT_DIR (default
# /tmp/vlmrm-mutation-MODULE), writes the module's mutmut settings there (mutmut reads them from
# setup.cfg; the project's pyproject.toml is left alone) and mutates only the module's core
# functions, each mutant checked by the fastest tests that cover it. Prints the per-function
# tally and the surviving mutants; `cd SNAPSHOT_DIR && mutmut show NAME` shows one.
# Two mechanical rewrites in the snapshot (behaviour unchanged) let mutmut reach code it would
# skip: `@torch.no_grad()` methods become a `with torch.no_grad():` body (mutmut does not
# mutate decorated functions), and SAC.__init__ is excluded (its save_hyperparameters() reads
# the caller's frame, which mutmut's trampoline replaces).
# Durations on 2 shared CPU cores (AMD EPYC): see CONTRIBUTING.md.
set -euo pipefail
module=${1:?usage: bash tools/mutation.sh sac|rewards|data|envs [snapshot dir]}
root=$(cd "$(dirname "$0")/.." && pwd)
snap=${2:-/tmp/vlmrm-mutation-$module}

case $module in
sac)
    files="src/vlmrm/sac.py src/vlmrm/networks.py"
    names='vlmrm.networks.x__scaled_log_std* vlmrm.networks.xǁEnsembleMLPǁforward* vlmrm.networks.xǁActionRescaleǁforward* vlmrm.networks.xǁActionRescaleǁinverse* vlmrm.sac.xǁSACǁ_sample_action* vlmrm.sac.xǁSACǁ_actor_and_alpha_step* vlmrm.networks.xǁEnsembleMLPǁforward_detached* vlmrm.networks.xǁEnsembleMLPǁ_layers* vlmrm.sac.xǁSACǁ_update_continuous* vlmrm.sac.xǁSACǁ_update_discrete* vlmrm.sac.xǁSACǁrun_updates* vlmrm.sac.xǁSACǁ_soft_update_target* vlmrm.sac.xǁSACǁ_training_actions* vlmrm.sac.xǁSACǁ_needs_update_phase*'
    tests="tests/test_sac_reference.py tests/test_sac.py"
    ;;
rewards)
    files="src/vlmrm/rewards/formulas.py src/vlmrm/rewards/shaping.py"
    names='vlmrm.rewards.formulas.* vlmrm.rewards.shaping.*'
    tests="tests/test_rewards.py tests/test_integrity.py::test_standardised_rewards_use_the_newest_statistics_whenever_collected"
    ;;
data)
    files="src/vlmrm/data.py"
    names='vlmrm.data.xǁEpisodeTrackerǁ* vlmrm.data.xǁRLDataModuleǁstore_batch* vlmrm.data.xǁRLDataModuleǁminibatches* vlmrm.data.xǁRLDataModuleǁsample_updates* vlmrm.data.xǁRLDataModuleǁtake_updates* vlmrm.data.xǁRLDataModuleǁfinished_episodes_since*'
    tests="tests/test_data_rules.py tests/test_integrity.py::test_standardised_rewards_use_the_newest_statistics_whenever_collected tests/test_integrity.py::test_updates_per_step_and_batch_size_count_every_rank tests/test_training.py::test_episode_tracker_carries_sums_across_batches"
    ;;
envs)
    files="src/vlmrm/envs/classic_control.py src/vlmrm/envs/torchrl_env.py src/vlmrm/envs/gym_env.py src/vlmrm/envs/humanoid.py"
    names='vlmrm.envs.classic_control.x_pendulum_angle* vlmrm.envs.classic_control.xǁPaperCartPoleEnvǁ* vlmrm.envs.classic_control.xǁPaperMountainCarEnvǁ* vlmrm.envs.torchrl_env.xǁVLMRMEnvǁ_step* vlmrm.envs.torchrl_env.xǁVLMRMEnvǁ_reset* vlmrm.envs.torchrl_env.xǁVLMRMEnvǁ_output* vlmrm.envs.gym_env.xǁVLMRMGymEnvǁ* vlmrm.envs.humanoid.xǁPaperHumanoidEnvǁ__init__* vlmrm.envs.humanoid.xǁHumanoidPoseDetectorǁ*'
    tests="tests/test_env_rules.py tests/test_detector_rules.py tests/test_poses.py tests/test_envs.py tests/test_env_specs.py --deselect=tests/test_envs.py::test_parallel_env_distinct_frames_and_clean_shutdown"
    ;;
*)
    echo "unknown module $module (sac, rewards, data, envs)" >&2
    exit 2
    ;;
esac

rm -rf "$snap"
mkdir -p "$snap"
cp -r "$root/src" "$root/tests" "$root/configs" "$snap/"
find "$snap" -name __pycache__ -prune -exec rm -rf {} +
cd "$snap"
python3 - <<'EOF'
import re
from pathlib import Path

# `@torch.no_grad()` def -> the same def whose body runs under `with torch.no_grad():`.
for path in Path("src/vlmrm").rglob("*.py"):
    lines = path.read_text().splitlines(keepends=True)
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        match = re.match(r"(\s*)@torch\.no_grad\(\)\n", line)
        if not match:
            out.append(line)
            i += 1
            continue
        indent = match.group(1)
        i += 1
        while not lines[i].rstrip().endswith(":"):  # the def, possibly over several lines
            out.append(lines[i])
            i += 1
        out.append(lines[i])
        i += 1
        body_indent = indent + "    "
        if lines[i].strip().startswith('"""'):  # the docstring stays the docstring
            closed = lines[i].count('"""') == 2
            out.append(lines[i])
            i += 1
            while not closed:
                closed = '"""' in lines[i]
                out.append(lines[i])
                i += 1
        out.append(f"{body_indent}with torch.no_grad():\n")
        while i < len(lines) and (lines[i].strip() == "" or lines[i].startswith(body_indent)):
            out.append(("    " + lines[i]) if lines[i].strip() else lines[i])
            i += 1
    path.write_text("".join(out))

sac = Path("src/vlmrm/sac.py")
text = sac.read_text()
text = re.sub(
    r"(class SAC\(L\.LightningModule\):.*?def __init__\(.*?\) -> None:)",
    r"\1  # pragma: no mutate block",
    text,
    count=1,
    flags=re.S,
)
sac.write_text(text)
EOF

{
    echo "[mutmut]"
    echo "source_paths = src"
    echo "only_mutate ="
    for f in $files; do echo "    $f"; done
    echo "also_copy ="
    echo "    configs"
    echo "pytest_add_cli_args ="
    printf '    %s\n' -p no:cacheprovider -m "not slow"
    echo "pytest_add_cli_args_test_selection ="
    for t in $tests; do  # (test files added later join in when they exist)
        [[ $t == -* || -e ${t%%::*} ]] && echo "    $t"
    done
    echo "process_isolation = forkserver"
} >setup.cfg

# shellcheck disable=SC2086
mutmut run --max-children "${MUTMUT_CHILDREN:-2}" $names || true
mutmut results --all true >results.txt 2>/dev/null || true
python3 - <<'EOF'
import collections
import re

tally = collections.defaultdict(collections.Counter)
for line in open("results.txt"):
    match = re.match(r"\s*(\S+)__mutmut_\d+: (.+)", line)
    if match:
        tally[match.group(1)][match.group(2).strip()] += 1
print("| function | mutants | killed | timeout | segfault | survived | other |")
print("|---|---|---|---|---|---|---|")
total = collections.Counter()
for name, counts in sorted(tally.items()):
    n = sum(counts.values())
    caught = counts["killed"] + counts["timeout"] + counts["segfault"]
    other = n - caught - counts["survived"]
    if n == counts["not checked"]:
        continue
    total.update(counts)
    print(f"| {name} | {n} | {counts['killed']} | {counts['timeout']} | {counts['segfault']} "
          f"| {counts['survived']} | {other} |")
caught = total["killed"] + total["timeout"] + total["segfault"]
checked = caught + total["survived"]
print(f"\nkilled {caught} of {checked} checked ({100 * caught / max(checked, 1):.1f}%; a "
      "timeout or a crash of the test process (segfault) counts as killed: the tests noticed)")
EOF
grep ": survived" results.txt || true
