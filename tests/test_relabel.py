"""Changing the reward of a run: stored image embeddings, relabelling on resume (a wrapped
buffer included), refusal when the VLM changed, reward schedules, the offline comparison."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.test_training import fit, load, tiny_vlm_args
from tests.tiny_vlms import save_checkpoint
from vlmrm.checks.metrics import epic_distance, pearson, spearman
from vlmrm.cli import main as vlmrm_main
from vlmrm.keys import GT_REWARD, IMAGE_EMBEDDING, NEXT, OBSERVATION, RAW_REWARD, SUCCESS
from vlmrm.reward_comparison import compare_rewards, load_buffer

pytestmark = pytest.mark.usefixtures("one_thread")

# Every transition is collected before the first update (learning_starts 250, then one
# 50-step collection with the initial policy): runs with the same seed collect the same
# transitions whatever their reward, so a relabelled buffer can be compared with one rewarded
# from the frames themselves. 300 steps into a 200-transition buffer: it wraps. Resumed with
# the same total_frames, a run restores (and relabels) its buffer and collects nothing more.
SAME_TRANSITIONS = [
    "--data.total_frames", "300", "--data.learning_starts", "250", "--data.buffer_size", "200",
    "--evaluation.every_n_env_steps", "null", "--evaluation.episodes", "1",
    "--evaluation.video", "false", "--evaluation.plots", "false",
]  # fmt: skip
# Measured on the correct code: largest |relabelled - from frames| 3.3e-5 (the float16
# rounding of the stored embeddings), where the tiny random VLM's rewards spread (sd) 2e-3.
FLOAT16_TOLERANCE = 2e-4


def stored(cli) -> dict[str, torch.Tensor]:
    everything = cli.datamodule.replay_buffer[:]
    return {
        "observation": everything[OBSERVATION],
        "raw_reward": everything[NEXT, RAW_REWARD].reshape(-1),
        "embedding": everything[NEXT, IMAGE_EMBEDDING],
    }


def test_resume_with_another_alpha_relabels_every_transition_of_a_wrapped_buffer(
    tmp_path, tiny_clip
):
    vlm = tiny_vlm_args(tiny_clip)
    first = fit(tmp_path, *vlm, *SAME_TRANSITIONS, "--data.reward.init_args.alpha", "0.0")
    before = stored(first)
    assert before["embedding"].dtype == torch.float16
    assert before["embedding"].shape == (200, 32)  # the tiny CLIP's D = 32, wrapped to 200

    # The same transitions, rewarded from their frames with alpha 1 at collection.
    reference = fit(
        tmp_path, *vlm, *SAME_TRANSITIONS, "--data.reward.init_args.alpha", "1.0",
        run_name="reference",
    )  # fmt: skip
    from_frames = stored(reference)
    assert torch.equal(from_frames["observation"], before["observation"])

    resumed = fit(
        tmp_path, *vlm, *SAME_TRANSITIONS, "--data.reward.init_args.alpha", "1.0",
        "--ckpt_path", "last",
    )  # fmt: skip
    after = stored(resumed)
    assert torch.equal(after["observation"], before["observation"])
    assert not torch.allclose(after["raw_reward"], before["raw_reward"], atol=FLOAT16_TOLERANCE)
    torch.testing.assert_close(
        after["raw_reward"], from_frames["raw_reward"], rtol=0, atol=FLOAT16_TOLERANCE
    )


def test_a_changed_vlm_or_missing_embeddings_cannot_be_relabelled(tmp_path, tiny_clip):
    name, _ = tiny_clip
    vlm = tiny_vlm_args(tiny_clip)
    fit(tmp_path, *vlm, *SAME_TRANSITIONS)
    other_weights = str(save_checkpoint(name, tmp_path / "other.pt", seed=1))
    changed = ["--data.reward.init_args.pretrained", other_weights, "--ckpt_path", "last"]
    with pytest.raises(ValueError, match="cannot be recomputed") as error:
        fit(tmp_path, *vlm, *SAME_TRANSITIONS, *changed)
    assert "--data.on_reward_change keep" in str(error.value)
    # Keeping the stored rewards is an explicit choice.
    kept = fit(tmp_path, *vlm, *SAME_TRANSITIONS, *changed, "--data.on_reward_change", "keep")
    assert len(kept.datamodule.replay_buffer) == 200

    fit(tmp_path, *vlm, *SAME_TRANSITIONS, "--data.store_embeddings", "false", run_name="plain")
    with pytest.raises(ValueError, match="holds no image embeddings"):
        fit(tmp_path, *vlm, *SAME_TRANSITIONS, "--data.reward.init_args.alpha", "1.0",
            "--data.store_embeddings", "false", "--ckpt_path", "last",
            run_name="plain")  # fmt: skip


def test_ground_truth_rewards_relabel_from_the_stored_env_reward(tmp_path):
    args = ["--data.total_frames", "200", "--data.learning_starts", "150"]
    fit(tmp_path, *args, config="cartpole_gt.yaml")
    resumed = fit(tmp_path, *args, "--data.reward.init_args.scale", "3.0",
                  "--data.reward.init_args.offset", "-1.0", "--ckpt_path", "last",
                  config="cartpole_gt.yaml")  # fmt: skip
    everything = resumed.datamodule.replay_buffer[:]
    torch.testing.assert_close(
        everything[NEXT, RAW_REWARD], 3.0 * everything[NEXT, GT_REWARD] - 1.0, rtol=0, atol=0
    )


SCHEDULE = "[{at_env_steps: 200, alpha: 1.0}]"


def test_reward_schedule_changes_the_reward_at_its_env_step_and_survives_a_resume(
    tmp_path, tiny_clip
):
    overlay = tmp_path / "csv.yaml"
    overlay.write_text(
        "trainer:\n  logger:\n    - class_path: lightning.pytorch.loggers.CSVLogger\n"
        "      init_args: {save_dir: runs}\n"
    )
    vlm = [*tiny_vlm_args(tiny_clip), "--config", str(overlay),
           "--data.reward.init_args.alpha", "0.0", "--data.reward_schedule", SCHEDULE,
           "--evaluation.every_n_env_steps", "null", "--evaluation.episodes", "1"]  # fmt: skip
    cli = fit(tmp_path, *vlm, "--data.total_frames", "300")
    data = cli.datamodule
    assert data.reward_phase == 1 and data.reward.alpha == 1.0
    # Every stored reward, collected before or after the change, is the new reward's.
    everything = data.replay_buffer[:]
    expected = data.reward.relabel(everything[NEXT])
    torch.testing.assert_close(
        everything[NEXT, RAW_REWARD].reshape(-1), expected, rtol=0, atol=FLOAT16_TOLERANCE
    )
    rows = list(csv.DictReader((Path(cli.trainer.default_root_dir) / "metrics.csv").open()))
    (change,) = [r for r in rows if r.get("reward/relabelled_transitions")]
    assert int(float(change["step"])) == 200 and float(change["reward/relabelled_transitions"])

    # Stopped in phase 0 and resumed, or stopped in phase 1 and resumed: phase 1 at the end.
    for stop in ("150", "250"):
        name = f"stop{stop}"
        fit(tmp_path, *vlm, "--data.total_frames", stop, run_name=name)
        resumed = fit(tmp_path, *vlm, "--data.total_frames", "300", "--ckpt_path", "last",
                      run_name=name)  # fmt: skip
        assert resumed.datamodule.reward_phase == 1, stop
        assert resumed.datamodule.reward.alpha == 1.0, stop


def test_offline_comparison_agrees_with_a_direct_computation(tmp_path, tiny_clip, capsys):
    vlm = tiny_vlm_args(tiny_clip)
    cli = fit(tmp_path, *vlm, *SAME_TRANSITIONS, "--data.reward.init_args.alpha", "0.5")
    run_dir = Path(cli.trainer.default_root_dir)
    buffer = load_buffer(load(run_dir / "checkpoints" / "last.ckpt"))
    reward = cli.datamodule.reward
    results = compare_rewards(buffer, reward, [("run", {}), ("alpha 1", {"alpha": 1.0})])
    assert reward.alpha == 0.5  # the reward is left as configured

    success = buffer[SUCCESS].reshape(-1).double()
    gt = buffer[GT_REWARD].reshape(-1).double()
    for result, alpha in zip(results, (0.5, 1.0), strict=True):
        reward.apply_changes({"alpha": alpha})
        direct = reward.relabel(buffer).double()
        assert result.pearson_success == pytest.approx(pearson(direct, success), abs=1e-9)
        assert result.spearman_success == pytest.approx(spearman(direct, success), abs=1e-9)
        assert result.epic_success == pytest.approx(epic_distance(direct, success), abs=1e-9)
        assert result.pearson_gt_reward == pytest.approx(pearson(direct, gt), abs=1e-9)
        assert result.mean_success == pytest.approx(float(direct[success > 0].mean()), abs=1e-6)
    reward.apply_changes({"alpha": 0.5})
    # A refused alternative leaves the reward as it was.
    with pytest.raises(ValueError, match="unknown kind"):
        compare_rewards(buffer, reward, [("alpha 1", {"alpha": 1.0}), ("bad", {"kind": "nope"})])
    assert reward.alpha == 0.5 and reward.kind == "projection"
    # The run's own reward matches what was stored (up to the float16 embeddings).
    torch.testing.assert_close(
        results[0].rewards, buffer[RAW_REWARD].reshape(-1), rtol=0, atol=FLOAT16_TOLERANCE
    )

    # The command: a table row per reward and a PNG of histograms.
    plot = tmp_path / "comparison.png"
    code = vlmrm_main(["compare-rewards", str(run_dir), "--alpha", "0", "1", "--device", "cpu",
                       "--plot", str(plot)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and plot.is_file()
    assert "| run's reward |" in out and "| alpha=0.0 |" in out and "| alpha=1.0 |" in out
    # A text histogram per reward and class: shares of the transitions, summing to 100%.
    other = next(line for line in out.splitlines() if line.strip().startswith("other ("))
    assert sum(int(x) for x in other.split(":")[1].split()) == pytest.approx(100, abs=6)


def test_statistics_merged_over_ranks_ignore_a_round_where_no_rank_had_rewards():
    """A relabelled buffer that is empty on every rank must not turn the statistics into NaN."""
    from vlmrm.rewards.shaping import RunningMeanStd

    statistics = RunningMeanStd()
    statistics.update(torch.tensor([1.0, 3.0]), all_reduce=lambda t: t)
    statistics.update(torch.zeros(0), all_reduce=lambda t: t)  # the sum over ranks is 0 values
    assert float(statistics.count) == 2 and float(statistics.mean) == 2.0
    assert float(statistics.var) == 1.0
